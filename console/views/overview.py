"""Overview: the live numbers, the last hour's throughput and latency, recent failures."""
from __future__ import annotations

from datetime import tzinfo

import streamlit as st

from engine import TaskQueue

from ..charts import latency_spec, throughput_spec, totals
from ..components import page_link
from ..data import OverviewSnapshot, count_text, failures_frame, format_rate, load_overview
from ..live_panel import live_panel
from ..panel import TABLE_TIME, Panel
from ..runtime import ConsoleContext
from ..shared import shared_counts, shared_object, shared_read
from ..spend import spend_frame, spend_summary
from ..timefmt import operator_zone, zone_label

KEY = "overview"


def render(ctx: ConsoleContext) -> None:
    """Draw the Overview page."""
    st.caption("Live numbers for the whole queue; they refresh every "
               f"{ctx.refresh_seconds:g} s without reloading the page.")
    zone = operator_zone()
    # Built once a tick for every session in the same time zone (the failures' times are
    # shown in it), and polled by the page: no rerun of this script.
    live_panel(ctx.queue, f"{KEY}_live", "the queue overview",
               lambda: overview_panel(ctx.queue, zone), zone_label(zone),
               seconds=ctx.refresh_seconds)
    left, right = st.columns(2)
    with left:
        page_link("batches", "All batches", ":material/stacks:")
    with right:
        page_link("failed", "All failed tasks", ":material/arrow_forward:")


def overview_panel(queue: TaskQueue, zone: tzinfo) -> Panel:
    """The Overview's live part: the numbers, the last hour's charts, the spend and the
    most recent failures (failure times in ``zone``)."""
    snapshot, figures = shared_object(queue, "overview", lambda: _build(queue))
    panel = Panel()
    _numbers(panel, snapshot)
    _charts(panel, snapshot, figures)
    _spend(panel, queue, zone)
    _failures(panel, snapshot, zone)
    return panel


def _numbers(panel: Panel, snapshot: OverviewSnapshot) -> None:
    counts = snapshot.counts
    stats = counts.stats
    done = stats.completed_tasks + stats.failed_tasks
    panel.heading("Tasks", "a batch's queries are tasks; the batch itself is counted below")
    # Three cards a row: six in one row cut their labels in a 1024 px window.
    panel.metrics([
        ("Pending", f"{stats.pending_tasks:,}", "Tasks waiting in line, all priorities"),
        ("Running", f"{counts.running_tasks:,}", "Tasks held by a worker right now"),
        ("Completed", f"{stats.completed_tasks:,}", "Tasks finished successfully, over the "
         "queue's life"),
        ("Failed", f"{stats.failed_tasks:,}", "Tasks out of attempts, over the queue's life"),
        ("Active workers", f"{stats.active_workers:,}", "Heartbeat within the lease timeout"),
        ("Success rate", format_rate(stats.success_rate) if done else "—",
         "completed / (completed + failed) tasks"),
    ], per_row=3, border=True)
    depth = stats.depth_by_priority
    panel.heading("Waiting", "pending tasks by priority, then tasks waiting for a time or a "
                  "retry, and failed tasks stored")
    panel.metrics([(label, f"{value:,}") for label, value in (
        ("Urgent", depth.get("urgent", 0)), ("High", depth.get("high", 0)),
        ("Normal", depth.get("normal", 0)), ("Low", depth.get("low", 0)),
        ("Set aside", stats.routed_tasks),      # pending, for a worker of their type
        ("Scheduled", stats.scheduled_tasks), ("Retry waiting", stats.retry_tasks),
        ("Dead letters", counts.dead_letter_tasks))], per_row=4)
    batches = [(name.capitalize(), count_text(counts.batches_in(name), counts.batches_exact(name)))
               for name in ("running", "completed", "failed", "cancelled")]
    parts: list = [("Batches", True), " stored"]
    for label, value in batches:
        parts += [f" · {label} ", (value, True)]
    panel.line(*parts)


def _build(queue: TaskQueue) -> tuple[OverviewSnapshot, tuple]:
    snapshot = load_overview(queue, counts=shared_counts(queue))
    return snapshot, (throughput_spec(snapshot.throughput), latency_spec(snapshot.throughput))


def _charts(panel: Panel, snapshot: OverviewSnapshot, figures: tuple) -> None:
    hour = totals(snapshot.throughput)
    panel.line(("Last hour, tasks:", True), f" {hour['submitted']:,} submitted · "
               f"{hour['completed']:,} completed · {hour['failed']:,} failed · "
               f"{hour['retried']:,} retried")
    panel.row(Panel().figure(figures[0]), Panel().figure(figures[1]))


def _spend(panel: Panel, queue: TaskQueue, zone: tzinfo) -> None:
    """Tokens and cost of the agents' model calls: in all, per model, per batch."""
    totals = shared_read(queue, "usage_totals", queue.usage_totals)
    panel.heading("Spend", "tokens and cost of the agents' model calls, counted as they end")
    if not totals["total"]["calls"]:
        panel.caption("No model call has been counted yet.")
        return
    panel.metrics(spend_summary(totals), per_row=3)     # three a row, as the cards above
    # One table under the other: side by side they would not fit a 1024 px window.
    panel.caption("Per model").table(spend_frame(totals["models"], "Model"), zone,
                                     name=f"{KEY}_spend_models")
    panel.caption("Per batch, most recent first")
    panel.table(spend_frame(totals["batches"], "Batch"), zone,
                empty="No batch has spent anything yet.", name=f"{KEY}_spend_batches")


def _failures(panel: Panel, snapshot: OverviewSnapshot, zone: tzinfo) -> None:
    panel.heading("Most recent failures")
    frame = failures_frame(snapshot.failures)
    # When, which task and why first: they fit the main area of a 1024 px window.
    panel.table(frame[["Failed at (UTC)", "Task id", "Error", "Type", "Attempts"]], zone,
                empty="No failed tasks are stored.", short_ids=("Task id",),
                name=f"{KEY}_failures_table", time_format=TABLE_TIME,
                widths={"Failed at (UTC)": 104, "Error": 240})
