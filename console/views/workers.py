"""Workers: every worker's state and counters; lost workers and what became of their tasks."""
from __future__ import annotations

import streamlit as st

from ..components import live, plain_table, redis_guard, updated_caption
from ..data import load_workers
from ..runtime import ConsoleContext
from ..shared import shared_read
from ..text import md
from ..theme import STATE_COLOR, status_markdown

KEY = "workers"
WORKER_ORDER = ["State", "Name", "Heartbeat age", "In hand", "Processed", "Failed",
                "Last heartbeat (UTC)", "Worker id", "Host", "PID", "Concurrency", "Retried",
                "Uptime", "Handlers"]
# What tells a healthy worker from a stuck one first, in widths that fit the main area of
# a 1024 px window (about 560 px); the rest scrolls. The age is the last heartbeat as an
# operator reads it ("4 s ago"); the time itself follows further right.
WORKER_COLUMNS = {
    "Name": st.column_config.TextColumn(width=130),
    "Heartbeat age": st.column_config.TextColumn(
        "Last heartbeat", width=100, help="How long ago the worker last reported"),
    "In hand": st.column_config.NumberColumn(width=64, help="Tasks it is running now"),
    "Processed": st.column_config.NumberColumn(width=76),
    "Failed": st.column_config.NumberColumn(width=60),
    "Last heartbeat (UTC)": st.column_config.DatetimeColumn(
        "Last heartbeat at", format="YYYY-MM-DD HH:mm:ss"),
}


def render(ctx: ConsoleContext) -> None:
    """Draw the Workers page."""
    st.caption("Workers announce themselves with a heartbeat. One silent for longer than the "
               f"lease timeout ({ctx.settings.lease_timeout:g} s) is shown as lost; the tasks it "
               "held go back in line (or fail once they have stalled too often).")
    if ctx.worker is not None:
        st.info(f"This console runs an embedded worker, {md(ctx.worker.worker_id)}. "
                "Start more with `python worker.py` against a shared Redis.",
                icon=":material/science:")
    live(_live_body, ctx, seconds=ctx.refresh_seconds)


def _live_body(ctx: ConsoleContext) -> None:
    with redis_guard("the workers"):
        view = shared_read(ctx.queue, "workers", lambda: load_workers(ctx.queue))
        cells = [("Running", view.counts["running"], "Heartbeat within the lease timeout"),
                 ("Stopping", view.counts["stopping"], "Finishing the tasks in hand"),
                 ("Lost", view.counts["lost"], "Silent for longer than the lease timeout"),
                 ("Stopped", view.counts["stopped"], "Stopped cleanly, in the last day")]
        for column, (label, value, help_text) in zip(st.columns(len(cells)), cells):
            column.metric(label, f"{value:,}", help=help_text, border=True)
        if view.table.empty:
            st.info("No worker has reported yet. Start one with `python worker.py`.")
        else:
            plain_table(f"{KEY}_table", view.table, column_order=WORKER_ORDER,
                        column_config=WORKER_COLUMNS)
        for story in view.lost:
            info = story.info
            label = (f"{status_markdown('lost', STATE_COLOR)} · "
                     f"{md(info.get('name') or info['worker_id'])} on {md(info.get('host', '?'))} "
                     f"(pid {md(info.get('pid', '?'))}): what happened to its tasks")
            with st.expander(label, expanded=True):
                st.caption(md(f"Last heartbeat {info.get('last_heartbeat') or 'unknown'} · "
                              f"processed {info.get('processed', 0)} · failed {info.get('failed', 0)}"))
                if story.tasks.empty:
                    st.caption("It held no task when it went silent.")
                else:
                    plain_table(f"{KEY}_lost_{info['worker_id']}", story.tasks)
        updated_caption()
