"""Overview: the live numbers, the last hour's throughput and latency, recent failures."""
from __future__ import annotations

from typing import Any

import streamlit as st

from ..charts import latency_figure, throughput_figure, totals
from ..components import live, page_link, plain_table, redis_guard, updated_caption
from ..data import OverviewSnapshot, count_text, failures_frame, format_rate, load_overview
from ..runtime import ConsoleContext
from ..shared import shared_counts, shared_drawing, shared_object, shared_read
from ..spend import spend_frame, spend_summary
from ..timefmt import operator_zone, zone_label

KEY = "overview"


def render(ctx: ConsoleContext) -> None:
    """Draw the Overview page."""
    st.caption("Live numbers for the whole queue; they refresh every "
               f"{ctx.refresh_seconds:g} s without reloading the page.")
    live(_live_body, ctx, seconds=ctx.refresh_seconds)


def _live_body(ctx: ConsoleContext) -> None:
    with st.container(key=f"{KEY}_live"), redis_guard("the queue overview"):
        # Drawn once per tick for every session in the same time zone (the failures'
        # times are shown in it); the others get the same elements replayed.
        shared_drawing(ctx.queue, "overview", lambda: _draw(ctx), zone_label(operator_zone()))


def _draw(ctx: ConsoleContext) -> None:
    # Read once per tick for every time zone.
    snapshot, figures = shared_object(ctx.queue, "overview", lambda: _build(ctx))
    _numbers(snapshot)
    _charts(snapshot, figures)
    _spend(ctx)
    _failures(snapshot)
    updated_caption()


def _numbers(snapshot: OverviewSnapshot) -> None:
    counts = snapshot.counts
    stats = counts.stats
    done = stats.completed_tasks + stats.failed_tasks
    st.markdown("**Tasks** · a batch's queries are tasks; the batch itself is counted below")
    cells = [
        ("Pending", f"{stats.pending_tasks:,}", "Tasks waiting in line, all priorities"),
        ("Running", f"{counts.running_tasks:,}", "Tasks held by a worker right now"),
        ("Completed", f"{stats.completed_tasks:,}", "Tasks finished successfully, over the "
         "queue's life"),
        ("Failed", f"{stats.failed_tasks:,}", "Tasks out of attempts, over the queue's life"),
        ("Active workers", f"{stats.active_workers:,}", "Heartbeat within the lease timeout"),
        ("Success rate", format_rate(stats.success_rate) if done else "—",
         "completed / (completed + failed) tasks"),
    ]
    # Three cards a row: six in one row cut their labels in a 1024 px window.
    for column, (label, value, help_text) in _grid(cells, 3):
        column.metric(label, value, help=help_text, border=True)
    depth = stats.depth_by_priority
    st.markdown("**Waiting** · pending tasks by priority, then tasks waiting for a time or a "
                "retry, and failed tasks stored")
    more = [("Urgent", depth.get("urgent", 0)), ("High", depth.get("high", 0)),
            ("Normal", depth.get("normal", 0)), ("Low", depth.get("low", 0)),
            ("Set aside", stats.routed_tasks),      # pending, for a worker of their type
            ("Scheduled", stats.scheduled_tasks), ("Retry waiting", stats.retry_tasks),
            ("Dead letters", counts.dead_letter_tasks)]
    for column, (label, value) in _grid(more, 4):
        column.metric(label, f"{value:,}")
    batches = [(name.capitalize(), count_text(counts.batches_in(name), counts.batches_exact(name)))
               for name in ("running", "completed", "failed", "cancelled")]
    left, right = st.columns([3, 1.4], vertical_alignment="center")
    left.markdown("**Batches** stored · " + " · ".join(f"{label} **{value}**"
                                                      for label, value in batches))
    with right:
        page_link("batches", "All batches", ":material/stacks:")


def _grid(cells: list, per_row: int) -> list[tuple[Any, Any]]:
    """``(column, cell)`` pairs that lay ``cells`` out ``per_row`` a row, row after row:
    one set of columns, each holding its cell of every row. Rows of their own would look
    the same and draw ``1 + per_row`` more containers a row, on every tick of every
    open page."""
    columns = st.columns(per_row)
    return [(columns[i % per_row], cell) for i, cell in
            sorted(enumerate(cells), key=lambda pair: pair[0] % per_row)]


def _build(ctx: ConsoleContext) -> tuple[OverviewSnapshot, tuple]:
    snapshot = load_overview(ctx.queue, counts=shared_counts(ctx.queue))
    return snapshot, (throughput_figure(snapshot.throughput), latency_figure(snapshot.throughput))


def _charts(snapshot: OverviewSnapshot, figures: tuple) -> None:
    hour = totals(snapshot.throughput)
    st.markdown(f"**Last hour, tasks:** {hour['submitted']:,} submitted · {hour['completed']:,} "
                f"completed · {hour['failed']:,} failed · {hour['retried']:,} retried")
    left, right = st.columns(2)
    left.plotly_chart(figures[0], width="stretch", key=f"{KEY}_throughput_chart")
    right.plotly_chart(figures[1], width="stretch", key=f"{KEY}_latency_chart")


def _spend(ctx: ConsoleContext) -> None:
    """Tokens and cost of the agents' model calls: in all, per model, per batch."""
    totals = shared_read(ctx.queue, "usage_totals", ctx.queue.usage_totals)
    st.markdown("**Spend** · tokens and cost of the agents' model calls, counted as they end")
    if not totals["total"]["calls"]:
        st.caption("No model call has been counted yet.")
        return
    for column, (label, value, help_text) in _grid(spend_summary(totals), 3):
        column.metric(label, value, help=help_text)     # three a row, as the cards above
    # One table under the other: side by side they would not fit a 1024 px window.
    st.caption("Per model")
    plain_table(f"{KEY}_spend_models", spend_frame(totals["models"], "Model"))
    st.caption("Per batch, most recent first")
    if totals["batches"]:
        plain_table(f"{KEY}_spend_batches", spend_frame(totals["batches"], "Batch"))
    else:
        st.caption("No batch has spent anything yet.")


def _failures(snapshot: OverviewSnapshot) -> None:
    head, link = st.columns([3, 1.4], vertical_alignment="bottom")
    head.markdown("**Most recent failures**")
    with link:
        page_link("failed", "All failed tasks", ":material/arrow_forward:")
    if not snapshot.failures:
        st.caption("No failed tasks are stored.")
        return
    # When, which task and why fit the main area of a 1024 px window (about 560 px).
    plain_table(f"{KEY}_failures_table", failures_frame(snapshot.failures),
                column_order=["Failed at (UTC)", "Task id", "Error", "Type", "Attempts"],
                column_config={"Failed at (UTC)": st.column_config.DatetimeColumn(
                                   format="MM-DD HH:mm:ss", width=112),
                               "Task id": st.column_config.TextColumn(width=112),
                               "Error": st.column_config.TextColumn(width=300)})
