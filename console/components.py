"""Small Streamlit building blocks the pages share: live fragments, selectable live
tables, flash messages and a guard that turns a Redis outage into a warning."""
from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import redis
import streamlit as st
from streamlit.errors import StreamlitAPIException

from engine import QueueError

from .theme import STATUS_COLOR

REDIS_DOWN = (redis.RedisError, QueueError, OSError)


def live(body: Callable[..., Any], *args: Any, seconds: float | None) -> None:
    """Run ``body(*args)`` as a fragment that reruns on its own every ``seconds``.

    A fragment reruns only itself, so a tick costs just the Redis reads inside ``body``
    (streamlit-autorefresh would rerun the whole page). ``seconds`` None or 0: static.
    """
    st.fragment(run_every=seconds or None)(body)(*args)


@contextlib.contextmanager
def redis_guard(what: str = "the queue") -> Iterator[None]:
    """Show a warning instead of a traceback when Redis does not answer; live parts
    simply try again at their next tick."""
    try:
        yield
    except REDIS_DOWN as exc:
        st.warning(f"Could not read {what}: Redis did not answer ({type(exc).__name__}: "
                   f"{_short(exc)}). Retrying on the next refresh.", icon="⚠️")


def updated_caption(prefix: str = "Updated") -> None:
    """A small "Updated 12:00:03 UTC" line, so operators see the data is live."""
    st.caption(f"{prefix} {datetime.now(timezone.utc):%H:%M:%S} UTC")


def flash(key: str, level: str, text: str) -> None:
    """Remember a message to show once where :func:`show_flash` is called (callbacks
    cannot draw: they run before the page)."""
    st.session_state[f"{key}__flash"] = (level, text)


def show_flash(key: str) -> None:
    """Show, and forget, the message :func:`flash` left for ``key``."""
    message = st.session_state.pop(f"{key}__flash", None)
    if message:
        level, text = message
        {"success": st.success, "warning": st.warning, "error": st.error}.get(level, st.info)(text)


def table_key(key: str) -> str:
    """The current widget key of a selectable table (it changes to clear the selection)."""
    return f"{key}_table_{st.session_state.get(f'{key}__generation', 0)}"


def selected_rows(key: str) -> list[int]:
    """Row positions currently selected in the table ``key``."""
    state = st.session_state.get(table_key(key))
    try:
        return list(state["selection"]["rows"])
    except (KeyError, TypeError):
        return []


def clear_selection(key: str) -> None:
    """Drop the table's selection (a fresh widget key: selection state cannot be
    written back to a dataframe)."""
    st.session_state[f"{key}__generation"] = st.session_state.get(f"{key}__generation", 0) + 1


def selectable_table(key: str, fetch: Callable[[], Any], to_frame: Callable[[Any], Any], *,
                     column_config: dict | None = None,
                     height: int | str = "auto") -> tuple[Any, list[int], bool]:
    """A live table whose rows can be selected: ``(data, selected positions, paused)``.

    While rows are selected the table keeps the rows it showed (no Redis read), so a
    refresh can never move the selection onto other tasks; clearing the selection
    resumes live updates.
    """
    rows = selected_rows(key)
    snapshot_key = f"{key}__snapshot"
    paused = bool(rows) and snapshot_key in st.session_state
    data = st.session_state[snapshot_key] if paused else fetch()
    st.session_state[snapshot_key] = data
    frame = to_frame(data)
    st.dataframe(frame, key=table_key(key), on_select="rerun", selection_mode="multi-row",
                 hide_index=True, column_config=column_config, width="stretch", height=height)
    return data, [r for r in rows if r < len(frame)], paused


def page_link(page: str, label: str, icon: str | None = None,
              query_params: dict[str, str] | None = None) -> None:
    """``st.page_link`` that leaves the link out, rather than failing the page, when the
    target is not a registered page (a page file run on its own, as in some tests)."""
    try:
        st.page_link(page, label=label, icon=icon, query_params=query_params)
    except (StreamlitAPIException, KeyError):
        pass


def plain_table(key: str, frame: Any, **kwargs: Any) -> None:
    """A read-only table inside a container keyed ``key``: the key finds it in tests and
    becomes a CSS class (``st-key-<key>``) for browser tests."""
    with st.container(key=key):
        st.dataframe(frame, hide_index=True, width="stretch", **kwargs)


def status_badge(status: str | None) -> None:
    """A coloured badge for a task status."""
    st.badge(status or "unknown", color=STATUS_COLOR.get(status or "", "gray"))


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:199] + "…"
