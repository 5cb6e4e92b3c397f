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
               selected: list[str] | None = None) -> None:
    """Draw the panel ``build()`` returns, kept live every ``seconds`` (None or 0:
    drawn once). ``what`` names it in messages ("the queue overview"); ``share`` must
    name everything ``build`` depends on besides the queue (filters, time zone), so
    sessions showing the same thing share one build a tick. A selectable table's ticked
    ids are the component's state (``st.session_state[key]["selected"]``): ``on_select``
    is called when they change, and ``selected`` is the selection the page holds now."""
    def as_json() -> bytes:
        return json.dumps(build().to_dict(), separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")

    session = get_script_run_ctx()
    subscription = live_channel.Subscription(session.session_id if session else "", queue,
                                             what, as_json, share, seconds or 0)

    def mount(source: dict[str, Any] | None) -> None:
        data = {"panel": _current(subscription), "source": source, "selected": selected or []}
        _live_component()(key=key, data=data, default={"selected": selected or []},
                          on_selected_change=on_select or (lambda: None))

    if seconds and live_channel.serving() and session is not None:
        token = live_channel.SUBSCRIPTIONS.subscribe(key, subscription)
        mount({"path": live_channel.url_path(live_channel.PANEL_PATH), "token": token,
               "seconds": seconds, "tokens_header": live_channel.TOKENS_HEADER,
               "seen_header": live_channel.SEEN_HEADER,
               "plotly": live_channel.url_path(live_channel.PLOTLY_PATH)})
    elif seconds:
        st.fragment(run_every=seconds)(mount)(None)
    else:
        mount(None)


def _current(subscription: live_channel.Subscription) -> dict[str, Any]:
    """The panel as this tick's answer holds it (the build the polls share), or a warning
    when Redis does not answer."""
    try:
        return json.loads(subscription.answer().body)
    except REDIS_DOWN as exc:
        return Panel().warning(f"Could not read {subscription.what}: Redis did not answer "
                               f"({type(exc).__name__}: {short_error(exc)}). Retrying on the "
                               "next refresh.").to_dict()


def forget_session() -> None:
    """Stop the live updates of this session's panels (it signed out)."""
    session = get_script_run_ctx()
    if session is not None:
        live_channel.SUBSCRIPTIONS.forget_session(session.session_id)
