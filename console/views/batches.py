"""Batches: the newest batches with their progress, and one batch opened in full.

A batch (``/Batches?batch=<id>``) shows its progress, its queries with their status, its
failures, and lets the operator retry the failed queries, cancel what is left and
download the results. The Submit page, the Tasks table and the Events page link here.
"""
from __future__ import annotations

import streamlit as st

from ..batch_jobs import results_csv
from ..components import (clear_selection, facts, flash, flash_message, live, page_link,
                          plain_table, redis_guard, run_action, selectable_table, show_flash,
                          status_badge, updated_caption)
from ..data import (BATCH_FAILURES_SHOWN, SEARCH_SCAN, BatchView, TaskFilters, batch_failures_frame,
                    batches_frame, load_batch_view, load_task_page, recent_batches, tasks_frame)
from ..runtime import ConsoleContext
from ..shared import shared_read
from ..spend import cost_text, tokens_text
from ..text import md
from ..timefmt import local_text
from ..url_state import UrlParam, UrlState

KEY = "batches"
OPEN = f"{KEY}_open"
CHILD_STATUS = f"{KEY}_child_status"
CHILD_PAGE = f"{KEY}_child_page"
CHILDREN_SHOWN = 50
ANY = "All"
CHILD_STATUSES = (ANY, "pending", "scheduled", "running", "retry", "completed", "failed",
                  "cancelled")
RECENT = 50
TIME = "YYYY-MM-DD HH:mm:ss"
# The columns that matter most first, in widths that fit the main area of a 1024 px window
# (about 560 px; a batch's own tables sit in a bordered box, about 530 px); the rest scrolls.
BATCH_ORDER = ["Status", "Batch id", "Progress", "Queries", "Failed", "Source", "Completed",
               "Cancelled", "Created (UTC)", "Finished (UTC)"]
CHILD_COLUMNS = {"Task id": st.column_config.TextColumn(width=96),
                 "Query": st.column_config.TextColumn(width=100),
                 "Error": st.column_config.TextColumn(width=110),
                 "Worker": st.column_config.TextColumn(width=96)}


def render(ctx: ConsoleContext) -> None:
    """Draw the Batches page."""
    URL.restore()
    left, middle, right = st.columns([3, 1, 1], vertical_alignment="bottom")
    left.text_input("Batch id", key=f"{KEY}_open_input", placeholder="paste a batch id to open it")
    middle.button("Open batch", key=f"{KEY}_open_button", on_click=_open_typed, width="stretch")
    if st.session_state.get(OPEN):
        right.button("Close batch", key=f"{KEY}_close", on_click=_close, width="stretch")
    live(_live_body, ctx, seconds=ctx.refresh_seconds)


# -- the URL -------------------------------------------------------------------------------------
# ``?batch=<id>&status=failed&page=2``: the open batch, and its queries' filter and page.
URL = UrlState(KEY, (UrlParam("batch", OPEN), UrlParam("status", CHILD_STATUS, ANY,
                                                       choices=CHILD_STATUSES),
                     UrlParam("page", CHILD_PAGE, 0, "page")),
               markers=(f"{KEY}_open_input",), on_apply=lambda: clear_selection(KEY))


def _open_typed() -> None:
    typed = (st.session_state.get(f"{KEY}_open_input") or "").strip()
    if typed:
        _open(typed)


def _open(batch_id: str) -> None:
    st.session_state[OPEN] = batch_id
    st.session_state[CHILD_PAGE] = 0


def _close() -> None:
    st.session_state.pop(OPEN, None)
    clear_selection(KEY)


# -- the live part -------------------------------------------------------------------------------
def _live_body(ctx: ConsoleContext) -> None:
    show_flash(KEY)
    batch_id = st.session_state.get(OPEN)
    if batch_id:
        with redis_guard("the batch"):
            _batch(ctx, batch_id)
        st.divider()
    st.subheader("Newest batches")
    with redis_guard("the batches"):
        rows, picked, _ = selectable_table(
            KEY, lambda: shared_read(ctx.queue, "recent_batches",
                                     lambda: recent_batches(ctx.queue, RECENT)),
            batches_frame, short_ids=("Batch id",), column_order=BATCH_ORDER,
            column_config={"Progress": st.column_config.ProgressColumn(
                               format="percent", min_value=0.0, max_value=1.0, width=110),
                           "Queries": st.column_config.NumberColumn(width=70),
                           "Failed": st.column_config.NumberColumn(width=60),
                           "Created (UTC)": st.column_config.DatetimeColumn(format=TIME),
                           "Finished (UTC)": st.column_config.DatetimeColumn(format=TIME)})
        if not rows:
            st.caption(f"No batch among the newest {SEARCH_SCAN:,} tasks. Submit one from the "
                       "Submit page.")
        if len(picked) == 1 and rows[picked[0]]["batch_id"] != batch_id:
            _open(rows[picked[0]]["batch_id"])
            clear_selection(KEY)
            st.rerun(scope="fragment")
        updated_caption()
    URL.publish()


def _batch(ctx: ConsoleContext, batch_id: str) -> None:
    view = load_batch_view(ctx.queue, batch_id)
    if view is None:
        st.warning(f"No batch {md(batch_id, 200)}: it was never submitted, it is not a batch, or "
                   "it expired or was deleted.")
        return
    summary = view.summary
    with st.container(border=True, key=f"{KEY}_view"):
        title, badge = st.columns([5, 1], vertical_alignment="center")
        title.subheader(f"Batch {md(batch_id)}")
        with badge:
            status_badge(summary["status"])
        _outcome_line(batch_id)
        total = summary["total"]
        st.progress(min(1.0, summary["done"] / total) if total else 0.0,
                    text=f"{summary['done']:,} of {total:,} queries done · "
                         f"{summary['completed']:,} completed · {summary['failed']:,} failed · "
                         f"{summary['cancelled']:,} cancelled")
        spend = shared_read(ctx.queue, "batch_usage", lambda: ctx.queue.usage(batch_id=batch_id),
                            batch_id)
        facts([("Source", summary.get("source")), ("Priority", _priority(summary)),
               ("Created", local_text(summary.get("created_at"))),
               ("Finished", local_text(summary.get("finished_at"), empty="not yet")),
               ("Tokens", tokens_text(spend["total_tokens"]) if spend["calls"] else None),
               ("Cost", cost_text(spend["cost"]))], per_row=3)
        _actions(ctx, view)
        _links(batch_id)
        queries, failures = st.tabs([f"Queries ({total:,})",
                                     f"Failures ({summary['failed'] + summary['cancelled']:,})"])
        with queries:
            _children(ctx, batch_id)
        with failures:
            _failures(view)


def _priority(summary: dict) -> str | None:
    from engine import TaskPriority
    try:
        return TaskPriority(int(summary.get("priority"))).label
    except (TypeError, ValueError):
        return None


def _actions(ctx: ConsoleContext, view: BatchView) -> None:
    summary = view.summary
    batch_id = summary["batch_id"]
    retryable = summary["failed"] + summary["cancelled"]
    retry, cancel, download = st.columns([1.2, 1, 1.2], vertical_alignment="bottom")
    retry.button(f"Retry {retryable:,} failed" if retryable else "Nothing to retry",
                 key=f"{KEY}_retry", type="primary", disabled=not retryable, width="stretch",
                 on_click=_act, args=(ctx, "retry", batch_id))
    cancel.button("Cancel the rest", key=f"{KEY}_cancel", disabled=view.finished,
                  width="stretch", on_click=_act, args=(ctx, "cancel", batch_id))
    if view.finished:
        download.download_button("Results CSV", data=_results_file(ctx, view),
                                 file_name=f"results-{batch_id}.csv", mime="text/csv",
                                 key=f"{KEY}_download", on_click="ignore",
                                 icon=":material/download:", width="stretch")
    else:
        download.caption("The results file can be downloaded once every query is done.")


def _results_file(ctx: ConsoleContext, view: BatchView) -> bytes:
    # Built once per outcome: a finished batch's results only change if it is retried.
    summary = view.summary
    signature = (summary["batch_id"], summary["completed"], summary["failed"], summary["cancelled"])
    cached = st.session_state.get(f"{KEY}__results")
    if cached is None or cached[0] != signature:
        cached = (signature, results_csv(ctx.queue, summary["batch_id"]))
        st.session_state[f"{KEY}__results"] = cached
    return cached[1]


def _links(batch_id: str) -> None:
    left, right = st.columns(2)
    with left:
        page_link("tasks", "List its queries in Tasks", ":material/filter_list:",
                  query_params={"batch": batch_id})
    with right:
        page_link("tasks", "Open the batch task", ":material/open_in_new:",
                  query_params={"task": batch_id})


def _act(ctx: ConsoleContext, action: str, batch_id: str) -> None:
    report = run_action(ctx.queue, KEY, action, [batch_id])
    if report is None:
        message = flash_message(KEY)
        if message:
            _remember(batch_id, message[0], message[1])
        return
    if report.done:
        text = ("Retried the batch's failed and cancelled queries." if action == "retry"
                else "Cancelled the batch's unfinished queries.")
        level = "success"
    else:
        text, level = report.summary(), "warning"
    flash(KEY, level, text)
    _remember(batch_id, level, text)


def _remember(batch_id: str, level: str, text: str) -> None:
    from ..components import clock_text
    st.session_state.setdefault(f"{KEY}__outcomes", {})[batch_id] = (level, text, clock_text())


def _outcome_line(batch_id: str) -> None:
    outcome = st.session_state.get(f"{KEY}__outcomes", {}).get(batch_id)
    if outcome:
        level, text, when = outcome
        {"success": st.success, "warning": st.warning, "error": st.error}.get(level, st.info)(
            f"{md(text)} ({when})", icon=":material/history:")


def _children(ctx: ConsoleContext, batch_id: str) -> None:
    left, right = st.columns([1, 2], vertical_alignment="bottom")
    status = left.selectbox("Query status", CHILD_STATUSES, key=CHILD_STATUS,
                            on_change=lambda: st.session_state.update({CHILD_PAGE: 0}))
    page_no = st.session_state.get(CHILD_PAGE, 0)
    filters = TaskFilters(batch=batch_id, status=None if status == ANY else status)
    page = shared_read(ctx.queue, "batch_children",
                       lambda: load_task_page(ctx.queue, filters, page_no, CHILDREN_SHOWN),
                       filters, page_no)
    last = page.first_row + len(page.records) - 1
    right.caption(f"Queries {page.first_row:,}–{last:,} of {page.total:,}"
                  + ("" if page.exact else f" (among the first {SEARCH_SCAN:,})")
                  if page.records else "No query matches.")
    plain_table(f"{KEY}_children", tasks_frame(page.records), column_config=CHILD_COLUMNS,
                column_order=["Status", "Task id", "Query", "Error", "Worker", "Attempts",
                              "Updated (UTC)"])
    previous, where, following = st.columns([1, 2, 1], vertical_alignment="center")
    previous.button("Previous queries", key=f"{KEY}_child_prev", disabled=page_no <= 0,
                    width="stretch", on_click=_turn, args=(-1,))
    where.caption(f"Page {page_no + 1:,} of {page.pages:,}")
    following.button("Next queries", key=f"{KEY}_child_next", width="stretch",
                     disabled=page_no + 1 >= page.pages, on_click=_turn, args=(1,))


def _turn(step: int) -> None:
    st.session_state[CHILD_PAGE] = max(0, st.session_state.get(CHILD_PAGE, 0) + step)


def _failures(view: BatchView) -> None:
    if not view.failures:
        st.caption("No query of this batch failed or was cancelled.")
        return
    shown = len(view.failures)
    st.caption(f"The first {shown:,} failed or cancelled queries, in input order"
               + (f" (looking at the first {view.failures_scanned:,})"
                  if view.failures_scanned >= SEARCH_SCAN else "")
               + (f"; at most {BATCH_FAILURES_SHOWN:,} are listed" if shown >= BATCH_FAILURES_SHOWN
                  else "") + ".")
    plain_table(f"{KEY}_failures", batch_failures_frame(view.failures),
                column_config={"Row": st.column_config.NumberColumn(width=48),
                               "Task id": CHILD_COLUMNS["Task id"],
                               "Query": CHILD_COLUMNS["Query"],
                               "Error": st.column_config.TextColumn(width=150)},
                column_order=["Row", "Status", "Task id", "Query", "Error", "Attempts"])
