"""The live channel: the HTTP route that open pages poll for their live panels.

``app.py`` serves the console as an ``st.App`` with :class:`LiveChannelMiddleware`, so the
console's own server answers ``GET /_live/panel`` beside Streamlit's routes, ahead of
their middleware. A page that shows a live panel (console/live_panel.py) *subscribes* it
here while its script runs: the subscription holds what to build (a function of the
queue, fixed by the page: its filters, the operator's time zone) under a random token,
and the browser asks for every panel of the page with their tokens in a header, once a
refresh interval.

Every subscription to the same panel shares one build per tick (``shared_object``): with
twenty pages open, one reads Redis and encodes the JSON, the others get the same bytes.
A panel that has not changed since the page's last answer is a 304 (a 304 part).

Who may read: only a token handed to a Streamlit session that drew the panel after the
console's sign-in, and only while that session is connected; signing out forgets the
session's tokens. A token is sent as a header, so it never lands in an access log.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from engine import TaskQueue

from .shared import held_object, shared_object

PANEL_PATH = "/_live/panel"           # under server.baseUrlPath, as Streamlit's own routes
PLOTLY_PATH = "/_live/plotly.min.js"
TOKEN_HEADER = "X-Live-Token"          # one panel's token
TOKENS_HEADER = "X-Live-Tokens"        # a page's tokens, space-separated: one poll a tick
SEEN_HEADER = "X-Live-Seen"            # the ETags the page holds, in the same order
NO_STORE = {"Cache-Control": "no-store"}
MAX_PER_SESSION = 16             # panels a session keeps subscribed (a page shows a few)
SWEEP_EVERY = 60.0               # seconds between sweeps for closed sessions

_lock = threading.Lock()
_serving = False
_base = ""


def serving() -> bool:
    """Whether this process answers the live channel's route (the console run by
    ``streamlit run app.py``; not an app that only embeds the console's widgets, nor
    AppTest)."""
    return _serving


def url_path(path: str) -> str:
    """``path`` (``PANEL_PATH``...) as this server answers it: under ``server.baseUrlPath``,
    so a proxy that forwards the console's prefix forwards the channel too."""
    return f"/{_base}{path}" if _base else path


@dataclass(frozen=True)
class Answer:
    """One built panel: its JSON and a tag for conditional requests."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, body: bytes) -> "Answer":
        """The answer for ``body`` (JSON bytes)."""
        return cls(body, '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')

    @cached_property
    def gzipped(self) -> bytes:
        """The body gzipped, once, when a single-panel request first asks for it (pages
        poll their panels together, uncompressed: no build pays for it otherwise)."""
        return gzip.compress(self.body, compresslevel=5)


@dataclass
class Subscription:
    """What one session's panel shows: ``build()`` returns the panel's JSON bytes, and
    ``share`` names everything the build depends on, so sessions with the same share
    get the same answer."""

    session_id: str
    queue: TaskQueue
    what: str
    build: Callable[[], bytes]
    share: tuple
    seconds: float
    used: float = field(default_factory=time.monotonic)

    def answer(self) -> Answer:
        """This tick's answer, built once for every subscription sharing it."""
        return shared_object(self.queue, f"live:{self.what}", lambda: Answer.of(self.build()),
                             *self.share, seconds=self.seconds)

    def built(self) -> Answer | None:
        """This tick's answer if it is already built (never blocks), else None."""
        return held_object(self.queue, f"live:{self.what}", *self.share, seconds=self.seconds)


class Subscriptions:
    """Tokens of the panels open pages show, and the sessions that hold them."""

    def __init__(self, session_alive: Callable[[str], bool]) -> None:
        self._session_alive = session_alive
        self._by_token: dict[str, Subscription] = {}
        self._tokens: dict[tuple[str, str], str] = {}      # (session, panel key) -> token
        self._swept = time.monotonic()

    def subscribe(self, key: str, subscription: Subscription) -> str:
        """Hold ``subscription`` under the session's panel ``key`` and return its token.
        Drawing the same panel again (a rerun, new filters) keeps the token and replaces
        what it shows, so a polling page switches to the new view on its next tick."""
        with _lock:
            self._sweep_if_due()
            slot = (subscription.session_id, key)
            token = self._tokens.get(slot)
            if token is None:
                self._drop_oldest_of(subscription.session_id)
                token = self._tokens[slot] = secrets.token_urlsafe(24)
            self._by_token[token] = subscription
            return token

    def find(self, token: str) -> Subscription | None:
        """The subscription behind ``token``, while its session is connected."""
        with _lock:
            subscription = self._by_token.get(token)
        if subscription is None:
            return None
        if not self._session_alive(subscription.session_id):
            self.forget_session(subscription.session_id)
            return None
        subscription.used = time.monotonic()
        return subscription

    def forget_session(self, session_id: str) -> None:
        """Drop every token of ``session_id`` (it signed out, or closed)."""
        with _lock:
            self._drop_session(session_id)

    def __len__(self) -> int:
        return len(self._by_token)

    def _drop_oldest_of(self, session_id: str) -> None:
        mine = [(self._by_token[t].used, slot) for slot, t in self._tokens.items()
                if slot[0] == session_id]
        for _, slot in sorted(mine)[:max(0, len(mine) - MAX_PER_SESSION + 1)]:
            self._by_token.pop(self._tokens.pop(slot), None)

    def _sweep_if_due(self) -> None:
        now = time.monotonic()
        if now - self._swept < SWEEP_EVERY:
            return
        self._swept = now
        for session_id in {slot[0] for slot in self._tokens}:
            if not self._session_alive(session_id):
                self._drop_session(session_id)

    def _drop_session(self, session_id: str) -> None:      # with _lock held
        for slot in [s for s in self._tokens if s[0] == session_id]:
            self._by_token.pop(self._tokens.pop(slot), None)


def _streamlit_session_alive(session_id: str) -> bool:
    from streamlit.runtime import Runtime
    return Runtime.exists() and Runtime.instance().is_active_session(session_id)


SUBSCRIPTIONS = Subscriptions(_streamlit_session_alive)


# -- the routes -------------------------------------------------------------------------------
def live_routes(subscriptions: Subscriptions | None = None) -> list[Any]:
    """The channel's Starlette routes: the panels, and the Plotly library the Overview's
    charts are drawn with (from the installed ``plotly`` package, cached by browsers)."""
    from starlette.routing import Route
    from streamlit import config
    global _serving, _base
    _serving = True
    _base = (config.get_option("server.baseUrlPath") or "").strip("/")
    table = subscriptions if subscriptions is not None else SUBSCRIPTIONS

    async def panel(request: Any) -> Any:
        return await _panel_response(table, request)

    return [Route(url_path(PANEL_PATH), panel, methods=["GET"]),
            Route(url_path(PLOTLY_PATH), _plotly_response, methods=["GET"])]


class LiveChannelMiddleware:
    """The channel's routes answered ahead of Streamlit's own middleware (sessions,
    path checks, gzip, error pages): a poll needs none of it, and with many pages open
    the layers cost about as much as the answer. ``app.py`` serves the console with it
    (``st.App(..., middleware=[Middleware(LiveChannelMiddleware)])``); any other path
    goes on to Streamlit."""

    def __init__(self, app: Any, subscriptions: Subscriptions | None = None) -> None:
        from starlette.routing import Router
        self.app = app
        routes = live_routes(subscriptions)
        self._paths = {route.path for route in routes}
        self._router = Router(routes)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in self._paths:
            await self._router(scope, receive, send)
        else:
            await self.app(scope, receive, send)


GONE = "This page's live updates have ended: reload the page."


async def _panel_response(table: Subscriptions, request: Any) -> Any:
    """One panel (``X-Live-Token``), or every panel of a page (``X-Live-Tokens``)."""
    if TOKENS_HEADER in request.headers:
        return await _page_response(table, request)
    from starlette.responses import JSONResponse, Response
    subscription = table.find(request.headers.get(TOKEN_HEADER, ""))
    if subscription is None:
        return JSONResponse({"error": GONE}, status_code=401, headers=NO_STORE)
    try:
        answer = await _answer_of(subscription)
    except Exception as exc:        # Redis down, or a record the build could not read
        return JSONResponse({"error": _failure(subscription, exc)}, status_code=503,
                            headers=NO_STORE)
    headers = {"ETag": answer.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if request.headers.get("If-None-Match") == answer.etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        return Response(answer.gzipped, media_type="application/json",
                        headers={**headers, "Content-Encoding": "gzip"})
    return Response(answer.body, media_type="application/json", headers=headers)


async def _page_response(table: Subscriptions, request: Any) -> Any:
    """Every panel a page shows, in one answer: ``{"answers": [...]}``, one per token of
    ``X-Live-Tokens`` (space-separated), each ``{"status": 200, "etag", "panel"}``,
    ``{"status": 304}`` when ``X-Live-Seen`` gives its current ETag, or
    ``{"status": 401 | 503, "error"}``. A page polls once a tick, not once per panel: with
    many pages open, the HTTP request itself was most of what a poll cost."""
    from starlette.responses import Response
    tokens = request.headers.get(TOKENS_HEADER, "").split()[:MAX_PER_SESSION]
    seen = request.headers.get(SEEN_HEADER, "").split()
    parts = [await _page_part(table, token, seen[i] if i < len(seen) else "")
             for i, token in enumerate(tokens)]
    return Response(b'{"answers":[' + b",".join(parts) + b"]}", media_type="application/json",
                    headers=NO_STORE)


async def _page_part(table: Subscriptions, token: str, seen: str) -> bytes:
    subscription = table.find(token)
    if subscription is None:
        return json.dumps({"status": 401, "error": GONE}).encode()
    try:
        answer = await _answer_of(subscription)
    except Exception as exc:
        return json.dumps({"status": 503, "error": _failure(subscription, exc)}).encode()
    if answer.etag == seen:
        return b'{"status":304}'
    # The panel's JSON as it was built once for every page: spliced in, not parsed again.
    return b'{"status":200,"etag":' + json.dumps(answer.etag).encode() + b',"panel":' + \
        answer.body + b"}"


async def _answer_of(subscription: Subscription) -> Answer:
    from starlette.concurrency import run_in_threadpool
    # Most polls find this tick's answer built: they are answered on the event loop.
    # A build reads Redis, so it runs in a thread.
    return subscription.built() or await run_in_threadpool(subscription.answer)


def _failure(subscription: Subscription, exc: Exception) -> str:
    """What a panel says when its build failed: no traceback, no address."""
    from .components import REDIS_DOWN
    reason = "Redis did not answer" if isinstance(exc, REDIS_DOWN) else "the read failed"
    return f"Could not read {subscription.what}: {reason} ({type(exc).__name__}). Retrying."


def plotly_js_path() -> Path:
    """The Plotly library shipped inside the ``plotly`` package."""
    import plotly
    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


async def _plotly_response(request: Any) -> Any:
    from starlette.responses import FileResponse
    return FileResponse(plotly_js_path(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})
