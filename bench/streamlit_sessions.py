"""Streamlit sessions without a browser: websocket clients that speak Streamlit's protocol.

A headless Chromium page costs its machine far more CPU than the Streamlit server spends
on it, so twenty of them on two cores measure Chromium, not the console. A
:class:`WireSession` does what the browser's Streamlit client does for an open, idle page
and nothing more: it opens ``/_stcore/stream``, asks for one run of a page (as a browser
does on opening it), and when the server announces a live fragment (an ``auto_rerun``
message, from ``st.fragment(run_every=...)``) it asks for that fragment's rerun at that
interval, as the browser's timer does. When the page draws live panels
(console/live_panel.py) it polls them as the browser's component does: every panel of
the page in one request a tick, with their tokens and the ETags it holds. The server
cannot tell it from a browser's session: each one is an ``AppSession`` that runs the
page's script and its fragments and sends every element it draws.

:class:`WireSessions` runs any number of them on one asyncio loop in a thread.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import aiohttp
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

STREAM_PATH = "/_stcore/stream"


class WireSession:
    """One open page of the console at ``url`` (``page_name``: ``""`` for the entry page,
    else the page's URL path, e.g. ``"Tasks"``)."""

    def __init__(self, url: str, page_name: str = "", query_string: str = ""):
        self.ws_url = url.replace("http://", "ws://", 1).rstrip("/") + STREAM_PATH
        self.page_name, self.query_string = page_name, query_string
        self.page_script_hash = ""
        self.runs_finished = 0          # script and fragment runs the server finished
        self.bytes_received = 0
        self.messages_received = 0
        self.first_run = asyncio.Event()
        self.first_run_seconds: float | None = None
        self.panel_answers = 0          # live panel polls the server answered (200 or 304)
        self._http_url = url.rstrip("/")
        self._http: aiohttp.ClientSession | None = None
        self._timers: dict[str, asyncio.Task] = {}
        self._panels: dict[str, list] = {}     # live panel token -> [its source, last ETag]
        self._socket: Any = None

    async def run(self, stopping: asyncio.Event) -> None:
        """Open the page and keep it open until ``stopping`` is set."""
        started = time.perf_counter()
        async with websockets.connect(self.ws_url, subprotocols=["streamlit"],
                                      max_size=None, open_timeout=120) as socket:
            self._socket = socket
            self._http = aiohttp.ClientSession()
            await self._request_run()
            receiver = asyncio.create_task(self._receive(started))
            await stopping.wait()
            for timer in self._timers.values():
                timer.cancel()
            receiver.cancel()
            await self._http.close()

    async def _request_run(self, fragment_id: str = "") -> None:
        message = BackMsg()
        state = message.rerun_script
        state.query_string = self.query_string
        state.page_name = self.page_name
        state.page_script_hash = self.page_script_hash
        if fragment_id:
            state.fragment_id = fragment_id
            state.is_auto_rerun = True
        await self._socket.send(message.SerializeToString())

    async def _receive(self, started: float) -> None:
        async for data in self._socket:
            self.bytes_received += len(data)
            self.messages_received += 1
            message = ForwardMsg()
            message.ParseFromString(data)
            kind = message.WhichOneof("type")
            if kind == "new_session":
                self.page_script_hash = message.new_session.page_script_hash
            elif kind == "auto_rerun":
                self._start_timer(message.auto_rerun.fragment_id, message.auto_rerun.interval)
            elif kind == "stop_auto_rerun":
                for fragment_id in message.stop_auto_rerun.fragment_ids:
                    timer = self._timers.pop(fragment_id, None)
                    if timer is not None:
                        timer.cancel()
            elif kind == "delta":
                self._watch_panel(message)
            elif kind == "script_finished":
                self.runs_finished += 1
                if not self.first_run.is_set():
                    self.first_run_seconds = time.perf_counter() - started
                    self.first_run.set()

    def _start_timer(self, fragment_id: str, interval: float) -> None:
        # The browser keeps one timer per fragment and leaves a running one alone when
        # the same interval is announced again (each run of the page announces it).
        if fragment_id in self._timers or not fragment_id or interval <= 0:
            return
        self._timers[fragment_id] = asyncio.create_task(self._tick(fragment_id, interval))

    def _watch_panel(self, message: ForwardMsg) -> None:
        """Poll a live panel the page drew, as its browser-side component does: every
        panel of the page in one request a tick (console/static/live_panel.js)."""
        delta = message.delta
        if delta.WhichOneof("type") != "new_element":
            return
        element = delta.new_element
        if element.WhichOneof("type") != "bidi_component":
            return
        source = (json.loads(element.bidi_component.json or "{}") or {}).get("source")
        if not source or source["token"] in self._panels:
            return
        self._panels[source["token"]] = [source, "-"]        # its source and last ETag
        if "panels" not in self._timers:
            self._timers["panels"] = asyncio.create_task(self._poll(source["seconds"]))

    async def _poll(self, seconds: float) -> None:
        while self._panels:
            await asyncio.sleep(seconds)
            held = list(self._panels.items())
            first = held[0][1][0]
            headers = {first["tokens_header"]: " ".join(token for token, _ in held),
                       first["seen_header"]: " ".join(etag for _, (_, etag) in held)}
            async with self._http.get(self._http_url + first["path"], headers=headers) as answer:
                answers = (await answer.json())["answers"]
            for (token, entry), part in zip(held, answers):
                if part["status"] == 401:
                    self._panels.pop(token, None)
                elif part["status"] in (200, 304):
                    self.panel_answers += 1
                    entry[1] = part.get("etag", entry[1])

    async def _tick(self, fragment_id: str, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self._request_run(fragment_id)


class WireSessions:
    """Browserless sessions on one asyncio loop in a background thread."""

    def __init__(self) -> None:
        self.sessions: list[WireSession] = []
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._tasks: list[Any] = []
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def open(self, url: str, page_name: str = "", timeout: float = 180.0) -> float:
        """Open one more session and wait for its first run; returns the seconds it took."""
        session = WireSession(url, page_name)
        self.sessions.append(session)

        async def start() -> None:
            self._tasks.append(asyncio.ensure_future(session.run(self._stopping)))
            await asyncio.wait_for(session.first_run.wait(), timeout)
        asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout + 5)
        return session.first_run_seconds or 0.0

    def runs_finished(self) -> int:
        """Script and fragment runs finished, over every session so far."""
        return sum(s.runs_finished for s in self.sessions)

    def panel_answers(self) -> int:
        """Live panel polls answered, over every session so far."""
        return sum(s.panel_answers for s in self.sessions)

    def close(self) -> None:
        """Close every session and stop the loop."""
        async def stop() -> None:
            self._stopping.set()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
