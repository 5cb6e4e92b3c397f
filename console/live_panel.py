"""Drawing a live panel on a page: the browser-side component and its subscription.

:func:`live_panel` draws a :class:`~console.panel.Panel` with the component in
console/static/live_panel.js. In the console's own server (``streamlit run app.py``,
which serves the live channel) the component asks ``/_live/panel`` for the next panel
every refresh interval, and the page's script does not rerun for it. Where the channel
is not served (the summary widget embedded in another app, AppTest), the panel is
drawn in a fragment that reruns every interval instead: the same drawing, the old way.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import streamlit as st
from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

from engine import TaskQueue

from . import live_channel
from .components import REDIS_DOWN, short_error
from .panel import Panel
from .shared import shared_object

STATIC = Path(__file__).resolve().parent / "static"
COMPONENT_NAME = "live_panel"
_component: Any = None


def _live_component() -> Any:
    """The component (registered once per process; its JS and CSS are inline)."""
    global _component
    if _component is None:
        _component = st.components.v2.component(
            COMPONENT_NAME, html="<div class='lp-root'></div>",
            js=(STATIC / "live_panel.js").read_text(encoding="utf-8"),
            css=(STATIC / "live_panel.css").read_text(encoding="utf-8"),
            isolate_styles=False)
    return _component


def live_panel(queue: TaskQueue, key: str, what: str, build: Callable[[], Panel], *share: Any,
               seconds: float | None, on_select: Callable[[], None] | None = None,
               selected: list[str] | None = None) -> Any:
    """Draw the panel ``build()`` returns, kept live every ``seconds`` (None or 0:
    drawn once). ``what`` names it in messages ("the queue overview"); ``share`` must
    name everything ``build`` depends on besides the queue (filters, time zone), so
    sessions showing the same thing share one build a tick. A panel with a selectable
    table reports the ids ticked in it: the result's ``selected`` (``on_select`` is
    called when they change; ``selected`` is the selection the page holds now)."""
    def as_json() -> bytes:
        return json.dumps(build().to_dict(), separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")

    def current() -> dict[str, Any]:
        try:
            return json.loads(shared_object(queue, f"live:{what}",
                                            lambda: live_channel.Answer.of(as_json()),
                                            *share, seconds=seconds).body)
        except REDIS_DOWN as exc:
            return Panel().warning(f"Could not read {what}: Redis did not answer "
                                   f"({type(exc).__name__}: {short_error(exc)}). Retrying on the "
                                   "next refresh.").to_dict()

    def mount(source: dict[str, Any] | None) -> Any:
        data = {"panel": current(), "source": source, "selected": selected or []}
        callbacks = {"on_selected_change": on_select or (lambda: None)}
        return _live_component()(key=key, data=data, default={"selected": selected or []},
                                 **callbacks)

    session = get_script_run_ctx()
    if seconds and live_channel.serving() and session is not None:
        token = live_channel.SUBSCRIPTIONS.subscribe(key, live_channel.Subscription(
            session.session_id, queue, what, as_json, share, seconds))
        return mount({"path": live_channel.url_path(live_channel.PANEL_PATH), "token": token,
                      "header": live_channel.TOKEN_HEADER, "seconds": seconds,
                      "plotly": live_channel.url_path(live_channel.PLOTLY_PATH)})
    if seconds:
        holder: dict[str, Any] = {}

        def tick() -> None:
            holder["result"] = mount(None)
        st.fragment(run_every=seconds)(tick)()
        return holder.get("result")
    return mount(None)


def forget_session() -> None:
    """Stop the live updates of this session's panels (it signed out)."""
    session = get_script_run_ctx()
    if session is not None:
        live_channel.SUBSCRIPTIONS.forget_session(session.session_id)
