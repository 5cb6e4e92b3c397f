"""Events: the live event stream, filterable, caught up from the stored log after a reload.

The filters live in the URL (``/Events?types=task.failed&q=<worker id>&keep=1000``): a link
can be shared, Back and Forward step through them, and they come back when the operator
returns to the page.
"""
from __future__ import annotations

import streamlit as st

from ..components import live, page_link, plain_table, redis_guard, updated_caption
from ..data import EVENT_TYPES, events_frame, filter_events
from ..runtime import ConsoleContext
from ..url_state import UrlParam, UrlState

KEY = "events"
KEEP_CHOICES = (200, 500, 1000, 2000)
READ_BATCH = 1000     # most events read per refresh: a flood cannot stall the page
DEFAULT_KEEP = 500
# When, what, which task, its status and the worker fit the main area of a 1024 px window
# (about 560 px); the detail and the event id (its milliseconds) scroll.
COLUMNS = {"Time (UTC)": st.column_config.DatetimeColumn(format="MM-DD HH:mm:ss", width=110),
           "Event": st.column_config.TextColumn(width=128),
           "Task id": st.column_config.TextColumn(width=96),
           "Worker": st.column_config.TextColumn(width=110)}
URL = UrlState(KEY, (UrlParam("types", f"{KEY}_types", (), "list"),
                     UrlParam("q", f"{KEY}_text"),
                     UrlParam("keep", f"{KEY}_keep", DEFAULT_KEEP, "int", KEEP_CHOICES)),
               markers=(f"{KEY}_text",))


def render(ctx: ConsoleContext) -> None:
    """Draw the Events page."""
    st.caption("Every state change, as the engine writes it. The stored log keeps the newest "
               f"{ctx.settings.events_max_len:,} events, so a reload (or a new browser) catches "
               "up from there.")
    URL.restore()
    types_col, text_col, keep_col, pause_col = st.columns([2.6, 2, 1.2, 1.2],
                                                          vertical_alignment="bottom")
    types = types_col.multiselect("Event types", EVENT_TYPES, key=f"{KEY}_types",
                                  placeholder="All event types", accept_new_options=True)
    text = text_col.text_input("Filter by task or worker id", key=f"{KEY}_text",
                               placeholder="any id or word in the event")
    keep = keep_col.selectbox("Keep last", KEEP_CHOICES, key=f"{KEY}_keep")
    paused = pause_col.toggle("Pause", key=f"{KEY}_paused")
    URL.publish()
    live(_live_body, ctx, types, text or "", int(keep), paused, seconds=ctx.refresh_seconds)


def _catch_up(ctx: ConsoleContext, keep: int) -> str:
    """Read what arrived since the last refresh; the first read of a session (a reload)
    starts from the newest ``keep`` stored events. Returns a note for the caption."""
    buffer = st.session_state.setdefault(f"{KEY}_buffer", [])
    last_id = st.session_state.get(f"{KEY}_last_id")
    if last_id is None:
        buffer[:] = ctx.queue.read_events(count=keep)
        note = f"caught up from the stored log ({len(buffer):,} events)"
    else:
        new = ctx.queue.read_events(after=last_id, count=READ_BATCH)
        note = f"{len(new):,} new"
        if len(new) >= READ_BATCH:
            # More arrived than one read takes: jump to the newest rather than lag behind.
            new = ctx.queue.read_events(count=keep)
            buffer.clear()
            note = "events arrived faster than shown: skipped ahead to the newest"
        buffer.extend(new)
    del buffer[:-keep]
    if buffer:
        st.session_state[f"{KEY}_last_id"] = buffer[-1]["id"]
    elif last_id is None:
        st.session_state[f"{KEY}_last_id"] = "0-0"
    return note


def _live_body(ctx: ConsoleContext, types: list[str], text: str, keep: int, paused: bool) -> None:
    with redis_guard("the event log"):
        note = "paused" if paused else _catch_up(ctx, keep)
        events = filter_events(st.session_state.get(f"{KEY}_buffer", []), types, text)
        st.markdown(f"**{len(events):,} events** shown · {note}")
        _batch_links(events)
        plain_table(f"{KEY}_table", events_frame(events), height=560, column_config=COLUMNS)
        updated_caption()


MAX_BATCH_LINKS = 5


def _batch_links(events: list[dict]) -> None:
    """Links to the batches whose progress the shown events report (newest first)."""
    seen: list[str] = []
    for event in reversed(events):
        data = event.get("data") or {}
        batch_id = data.get("batch_id") or data.get("parent_id") or (
            data.get("task_id") if event.get("type") == "batch.progress" else None)
        if batch_id and isinstance(batch_id, str) and batch_id not in seen:
            seen.append(batch_id)
        if len(seen) >= MAX_BATCH_LINKS:
            break
    if not seen:
        return
    columns = st.columns(len(seen) + 1, vertical_alignment="center")
    columns[0].caption("Batches in these events:")
    for column, batch_id in zip(columns[1:], seen):
        with column:
            page_link("batches", f"Batch {batch_id[:8]}", ":material/stacks:",
                      query_params={"batch": batch_id})
