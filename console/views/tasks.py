"""Tasks: a live, filtered, server-paged table; a task's details; actions alone and in bulk.

The filters, the page, the open task and the batch filter live in the URL
(``/Tasks?status=failed&type=agent_query&range=Last+hour&task=<id>``): a link can be
shared, Back and Forward step through them, and they come back when the operator returns
to the page from elsewhere.
"""
from __future__ import annotations

from datetime import tzinfo
from typing import Any, Sequence

import streamlit as st

from engine import TaskQueue, ValidationError, clock
from engine.keys import PRIORITY_NAMES, STATUS_NAMES

from ..actions import ACTIONS, BULK_LIMIT, matching_ids
from ..batch_jobs import batch_progress
from ..components import (REDIS_DOWN, clear_selection, clock_text, facts, flash, flash_message,
                          live, page_link, plain_table, redis_guard, run_action,
                          selection_header, show_flash, status_badge, table_key, turn_page)
from ..conversation_view import task_conversation
from ..data import (PAGE_SIZES, SEARCH_SCAN, TIME_RANGES, QueueCounts, TaskFilters, TaskPage,
                    allowed_actions, attempts_text, count_text, describe_age, load_task_page,
                    record_status, task_timeline, tasks_frame)
from ..live_panel import live_panel
from ..panel import TABLE_TIME, Panel
from ..progress_view import task_progress
from ..runtime import ConsoleContext
from ..shared import shared_counts, shared_object
from ..spend import usage_cells
from ..text import md
from ..timefmt import local_text, operator_zone, utc_text, zone_label
from ..url_state import UrlParam, UrlState

KEY = "tasks"
ANY = "All"
KNOWN_TYPES = ("agent_query", "batch_query", "custom")
KEEP_PRIORITY = "keep current"
DEFAULT_PAGE_SIZE = 50
# Widths that fit the status, id, query and error in the main area of a 1024 px window
# with the sidebar open (about 560 px, the selection boxes included); the other columns
# scroll. The session and the worker are left to the task's details; the Task id column
# is drawn cut (the whole id on hover and when copied; select the row to open it).
COLUMN_WIDTHS = {"Status": 84, "Task id": 0, "Query": 120, "Error": 120, "Updated (UTC)": 104,
                 "Type": 90, "Priority": 60, "Attempts": 64, "Created (UTC)": 104}
# The query and the error before the times: in a 1024 px window the columns after the
# error scroll (tests/test_browser_e2e.py checks which ones show).
COLUMN_ORDER = list(COLUMN_WIDTHS)

CHOICES = {"status": (ANY, *STATUS_NAMES), "priority": (ANY, *PRIORITY_NAMES),
           "range": tuple(TIME_RANGES), "size": PAGE_SIZES}
OPEN = f"{KEY}_open"
PAGE = f"{KEY}_page"
OUTCOMES = f"{KEY}__outcomes"   # task id -> (level, text, when) of the last action on it


def render(ctx: ConsoleContext) -> None:
    """Draw the Tasks page."""
    URL.restore()
    filters, page_size = _filter_bar()
    if filters.batch:
        _batch_filter_note(filters.batch)
    _open_by_id()
    _bulk_matching(ctx, filters)
    _table_part(ctx, filters, page_size)
    if st.session_state.get(OPEN):
        # Only an open task's detail reruns every tick; the table above is a live panel
        # the browser polls.
        st.divider()
        live(_detail_part, ctx, seconds=ctx.refresh_seconds)
    URL.publish()


# -- the URL -----------------------------------------------------------------------------------
def _url_changed() -> None:
    clear_selection(KEY)     # the selected rows were rows of another view


URL = UrlState(KEY, (
    UrlParam("status", f"{KEY}_status", ANY, choices=CHOICES["status"]),
    UrlParam("priority", f"{KEY}_priority", ANY, choices=CHOICES["priority"]),
    UrlParam("type", f"{KEY}_type"), UrlParam("session", f"{KEY}_session"),
    UrlParam("range", f"{KEY}_range", "Any time", choices=CHOICES["range"]),
    UrlParam("q", f"{KEY}_search"), UrlParam("batch", f"{KEY}_batch"),
    UrlParam("size", f"{KEY}_page_size", DEFAULT_PAGE_SIZE, "int", CHOICES["size"]),
    UrlParam("page", PAGE, 0, "page"), UrlParam("task", OPEN)),
    markers=(f"{KEY}_status", f"{KEY}_search"), on_apply=_url_changed)


# -- filters -----------------------------------------------------------------------------------
def _filters_changed() -> None:
    st.session_state[PAGE] = 0
    clear_selection(KEY)


def _filter_bar() -> tuple[TaskFilters, int]:
    common = dict(on_change=_filters_changed)
    first = st.columns([1.2, 1, 1.3, 0.9], vertical_alignment="bottom")
    status = first[0].selectbox("Status", CHOICES["status"], key=f"{KEY}_status", **common)
    priority = first[1].selectbox("Priority", CHOICES["priority"], key=f"{KEY}_priority",
                                  **common)
    time_range = first[2].selectbox("Updated", CHOICES["range"], key=f"{KEY}_range",
                                    help="When the task last changed status", **common)
    page_size = first[3].selectbox("Rows per page", PAGE_SIZES, key=f"{KEY}_page_size",
                                   **common)
    second = st.columns([2.2, 1, 1, 1.2], vertical_alignment="bottom")
    search = second[0].text_input("Search id or query text", key=f"{KEY}_search",
                                  placeholder="a task id, or words from the query", **common)
    task_type = second[1].text_input("Task type", key=f"{KEY}_type", placeholder="any",
                                     help="The exact type name, e.g. " + ", ".join(KNOWN_TYPES),
                                     **common)
    session = second[2].text_input("Session id", key=f"{KEY}_session", placeholder="any",
                                   **common)
    batch = second[3].text_input("Batch id", key=f"{KEY}_batch", placeholder="any",
                                 help="Only the queries of this batch, in input order", **common)
    filters = TaskFilters(status=None if status == ANY else status,
                          priority=None if priority == ANY else priority,
                          task_type=(task_type or "").strip() or None,
                          session_id=(session or "").strip() or None, time_range=time_range,
                          search=search or "", batch=(batch or "").strip() or None)
    return filters, int(page_size)


def _batch_filter_note(batch_id: str) -> None:
    left, right = st.columns([3, 1], vertical_alignment="center")
    left.caption(f"Showing the queries of batch {md(batch_id)}, in input order (the time "
                 "range does not apply).")
    with right:
        page_link("batches", "Open the batch", ":material/stacks:",
                  query_params={"batch": batch_id})


# -- the table: a live panel ---------------------------------------------------------------------
SELECTED = f"{KEY}__selected"       # ids ticked in the table (console/live_panel.py)
ACTED = f"{KEY}__acted"             # an action from the detail: redraw the whole page


def _table_part(ctx: ConsoleContext, filters: TaskFilters, page_size: int) -> None:
    show_flash(KEY)
    page_no = st.session_state.get(PAGE, 0)
    zone = operator_zone()
    with redis_guard("the tasks"):
        page = _shared_page(ctx.queue, filters, page_no, page_size)
        selected = list(st.session_state.get(SELECTED, []))
        live_panel(ctx.queue, table_key(KEY), "the tasks",
                   lambda: _table_panel(ctx.queue, filters, page_no, page_size, zone),
                   filters, page_no, page_size, zone_label(zone), seconds=ctx.refresh_seconds,
                   on_select=lambda: _picked(table_key(KEY)), selected=selected)
        _pager(page)
        if len(selected) == 1:
            st.session_state[OPEN] = selected[0]
        if page.exact_id and st.session_state.get(OPEN) != page.exact_id:
            st.session_state[OPEN] = page.exact_id
        if selected:
            _selection_bar(ctx, selected)


def _shared_page(queue: TaskQueue, filters: TaskFilters, page_no: int,
                 page_size: int) -> TaskPage:
    """The page of tasks, read once a tick for every session showing it (the panel's
    build and the pager below it read the same one)."""
    return shared_object(queue, "task_page", lambda: load_task_page(
        queue, filters, page_no, page_size), filters, page_no, page_size)


def _picked(component_key: str) -> None:
    """The table's ticked rows changed in the browser: keep them as the page's selection."""
    state = st.session_state.get(component_key) or {}
    st.session_state[SELECTED] = [str(i) for i in (state.get("selected") or [])][:BULK_LIMIT]


def _table_panel(queue: TaskQueue, filters: TaskFilters, page_no: int, page_size: int,
                 zone: tzinfo) -> Panel:
    """What the table shows this tick: how many match, the rows, where the page is."""
    page = _shared_page(queue, filters, page_no, page_size)
    panel = Panel().line(*_summary(page, filters, shared_counts(queue)))
    frame = tasks_frame(page.records)
    panel.table(frame[COLUMN_ORDER], zone, ids=page.ids, selectable=True, widths=COLUMN_WIDTHS,
                short_ids=("Task id",), empty="", name="tasks_table",   # the line above says it
                time_format=TABLE_TIME)
    return panel.caption(f"Page {page.page + 1:,} of {page.pages:,}")


def _detail_part(ctx: ConsoleContext) -> None:
    if st.session_state.pop(ACTED, False):
        st.rerun(scope="app")       # the table, the selection and the URL follow the action
    task_id = st.session_state.get(OPEN)
    if task_id:
        with redis_guard("the task"):
            _detail(ctx, task_id)


def _summary(page: TaskPage, filters: TaskFilters, counts: QueueCounts) -> list:
    """The line above the table: what it shows, as panel parts (``(text, True)`` bold)."""
    if page.exact_id:
        return ["Task id ", (page.exact_id, True), " found."]
    if not page.records:
        return [("No tasks match these filters.", True)]
    last = page.first_row + len(page.records) - 1
    parts: list = ["Showing ", (f"{page.first_row:,}–{last:,}", True), " of "]
    if filters.batch:
        return parts + [(f"{page.total:,}", True), " queries of the batch" + (
            "" if page.exact else f" (among its first {SEARCH_SCAN:,})")]
    if page.exact and not filters.scans and not TIME_RANGES.get(filters.time_range):
        # Whole indexes: say how many of them are batches (a batch waits in "running"
        # while its queries run, and ends like a task).
        tasks, batches = counts.index_split(filters.status, page.total)
        exact = counts.batches_exact(filters.status)
        parts += [(f"{page.total:,}", True), " entries: ", (count_text(tasks, exact), True),
                  " tasks and ", (count_text(batches, exact), True), " batches"]
    elif page.exact:
        parts += [(f"{page.total:,}", True), " entries (tasks and batches)"]
    else:
        parts += [(f"{page.total:,}", True), f" matches among the newest {SEARCH_SCAN:,} "
                  "entries (narrow the status or time range to look further)"]
    if page.max_rows is not None and page.total > page.max_rows:
        parts.append(f" · paging reaches {page.max_rows:,} rows: pick a status to go deeper")
    return parts


def _pager(page: TaskPage) -> None:
    # "Page 3 of 1,200" is in the live panel, where the page count stays current.
    previous, _, following = st.columns([1, 2, 1], vertical_alignment="center")
    previous.button("Previous page", key=f"{KEY}_prev", disabled=page.page <= 0,
                    on_click=turn_page, args=(KEY, -1), width="stretch")
    following.button("Next page", key=f"{KEY}_next", disabled=page.page + 1 >= page.pages,
                     on_click=turn_page, args=(KEY, 1), width="stretch")


# -- actions -------------------------------------------------------------------------------------
def _selection_bar(ctx: ConsoleContext, selected: list[str]) -> None:
    with st.container(border=True, key=f"{KEY}_selection"):
        # Rows are selected by task id: the table keeps updating, and a selected task
        # stays selected when new tasks push it down or off the page.
        selection_header(len(selected), False, KEY)
        columns = st.columns(5)
        for column, action in zip(columns, ACTIONS):
            column.button(f"{action.capitalize()} selected", key=f"{KEY}_sel_{action}",
                          on_click=_act, args=(ctx, action, selected), width="stretch",
                          type="primary" if action == "retry" else "secondary")
        columns[4].button("Clear selection", key=f"{KEY}_sel_clear", on_click=clear_selection,
                          args=(KEY,), width="stretch")


def _bulk_matching(ctx: ConsoleContext, filters: TaskFilters) -> None:
    with st.expander("Bulk action on every task matching the filters"):
        st.caption(f"Acts on the newest {BULK_LIMIT:,} matching tasks per click; tasks the "
                   "action does not apply to (say, retrying a completed task) are skipped.")
        left, middle, right = st.columns([1, 2, 1.4], vertical_alignment="bottom")
        action = left.selectbox("Bulk action", ACTIONS, format_func=str.capitalize,
                                key=f"{KEY}_bulk_action")
        confirmed = middle.checkbox("Yes, apply it to every matching task",
                                    key=f"{KEY}_bulk_confirm")
        right.button("Apply to all matching", key=f"{KEY}_bulk_apply", disabled=not confirmed,
                     on_click=_act_on_matching, args=(ctx, action, filters), type="primary")


def _act(ctx: ConsoleContext, action: str, task_ids: Sequence[str], priority: Any = None) -> None:
    report = run_action(ctx.queue, KEY, action, task_ids, priority=priority)
    if report is None:
        message = flash_message(KEY)
        if message and len(task_ids) == 1:
            _remember_outcome(task_ids[0], message[0], message[1])
        return
    flash(KEY, report.level, report.summary())
    if len(task_ids) == 1:
        _remember_outcome(task_ids[0], report.level, report.summary())
    clear_selection(KEY)
    if action == "delete" and st.session_state.get(OPEN) in report.done:
        st.session_state.pop(OPEN, None)


def _remember_outcome(task_id: str, level: str, text: str) -> None:
    st.session_state.setdefault(OUTCOMES, {})[task_id] = (level, text, clock_text())


def _act_on_matching(ctx: ConsoleContext, action: str, filters: TaskFilters) -> None:
    try:
        if filters.batch:
            page = load_task_page(ctx.queue, filters, 0, BULK_LIMIT)
            ids, total = page.ids, page.total
        else:
            ids, total = matching_ids(ctx.queue, filters, clock.now_ms(), limit=BULK_LIMIT)
    except REDIS_DOWN as exc:
        flash(KEY, "error", f"Nothing was changed: Redis did not answer ({exc}).")
        return
    if not ids:
        flash(KEY, "warning", "No task matches the filters: nothing was changed.")
        return
    _act(ctx, action, ids)
    st.session_state[f"{KEY}_bulk_confirm"] = False
    if total > len(ids):
        level, text, _ = st.session_state[f"{KEY}__flash"]
        flash(KEY, level, f"{text} {total - len(ids):,} more match: apply again for the next ones.")


# -- one task ------------------------------------------------------------------------------------
def _open_by_id() -> None:
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    left.text_input("Open a task by its id", key=f"{KEY}_open_input",
                    placeholder="paste a task id to open it below the table")
    right.button("Open task", key=f"{KEY}_open_button", on_click=_open_typed, width="stretch")


def _open_typed() -> None:
    typed = (st.session_state.get(f"{KEY}_open_input") or "").strip()
    if typed:
        st.session_state[OPEN] = typed


def _close() -> None:
    st.session_state.pop(OPEN, None)
    clear_selection(KEY)
    st.session_state[ACTED] = True


def _detail(ctx: ConsoleContext, task_id: str) -> None:
    try:
        record = ctx.queue.get_task(task_id)
    except ValidationError as exc:      # not something a task id can be (from a link)
        st.warning(f"No task {md(task_id, 200)}: {md(exc)}")
        return
    if record is None:
        st.warning(f"No task {md(task_id, 200)}: it was never submitted, or it expired or was "
                   "deleted.")
        return
    status = record_status(record)
    is_batch = record.get("task_type") == "batch_query"
    with st.container(border=True, key=f"{KEY}_detail"):
        title, badge, close = st.columns([4, 1, 1.5], vertical_alignment="center")
        title.subheader(f"Task {md(task_id)}")
        with badge:
            status_badge(status)
        close.button("Close task", key=f"{KEY}_close", on_click=_close, width="stretch")
        st.caption(f"Live: read {clock_text()}, again every {ctx.refresh_seconds:g} s. The "
                   "buttons act on the task as it is then: the engine's answer shows here.")
        _outcome_line(task_id)
        if record.get("corrupt"):
            st.error(f"This task's record is corrupt: {md(', '.join(record['corrupt']))} could not "
                     "be read. What could be read is shown below; deleting the task removes it.",
                     icon=":material/report:")
        _facts(record)
        task_progress(record, KEY)
        task_conversation(ctx.queue, record, KEY)
        if is_batch:
            _batch_progress(ctx, task_id)
        elif record.get("parent_id"):
            page_link("batches", "Part of a batch: open it", ":material/stacks:",
                      query_params={"batch": record["parent_id"]})
        _detail_actions(ctx, record, allowed_actions(status, is_batch))
        payload, result, error, timeline = st.tabs(["Payload", "Result", "Error", "Timeline"])
        payload.json(record.get("payload") or {}, expanded=2)
        with result:
            if record.get("result") is None:
                st.caption("No result stored (not finished yet, failed, or expired).")
            else:
                st.json(record["result"], expanded=2)
        with error:
            if record.get("error"):
                st.code(record["error"], language=None, wrap_lines=True)
            if record.get("traceback"):
                st.markdown("**Traceback**")
                st.code(record["traceback"], language="python")
            if not record.get("error") and not record.get("traceback"):
                st.caption("No error recorded.")
        with timeline:
            plain_table(f"{KEY}_timeline", task_timeline(ctx.queue, record),
                        column_config={"Time (UTC)": st.column_config.DatetimeColumn(
                            format="YYYY-MM-DD HH:mm:ss.SSS")})


def _outcome_line(task_id: str) -> None:
    """The answer to the last action on this task, until the next one."""
    outcome = st.session_state.get(OUTCOMES, {}).get(task_id)
    if outcome:
        level, text, when = outcome
        {"success": st.success, "warning": st.warning, "error": st.error}.get(level, st.info)(
            f"{md(text)} ({when})", icon=":material/history:")


def _facts(record: dict[str, Any]) -> None:
    cells = [("Type", record.get("task_type")), ("Priority", record.get("priority")),
             ("Attempts", attempts_text(record, " of ")), ("Worker", record.get("worker_id")),
             ("Run time", _run_time(record.get("duration"))), ("Session", record.get("session_id"))]
    facts(cells + usage_cells(record), per_row=3)
    times = [("Created", "created_at"), ("Started", "started_at"), ("Finished", "finished_at"),
             ("Due", "due_at")]
    shown = [(label, record[name]) for label, name in times if record.get(name)]
    if shown:
        st.caption(" · ".join(f"{label} {md(local_text(value))}" for label, value in shown),
                   help=" · ".join(f"{label}: {utc_text(value)}" for label, value in shown))
    extra = ([f"Parent batch {md(record['parent_id'])}"] if record.get("parent_id") else []) + \
        ([f"Stalls: {md(record['stalls'])}"] if record.get("stalls") else []) + _why(record)
    if extra:
        st.caption(" · ".join(extra))


def _why(record: dict[str, Any]) -> list[str]:
    """Why the task ended, or why it waits (the engine's reason), and who cancelled it."""
    lines = [f"Why: {md(record['reason'])}"] if record.get("reason") else []
    if record.get("cancelled_by") or record.get("cancel_reason"):
        lines.append(f"Cancelled by {md(record.get('cancelled_by') or 'someone unnamed')}: "
                     f"{md(record.get('cancel_reason') or 'no reason given')}")
    return lines


def _run_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.2f} s" if seconds < 10 else describe_age(seconds)


def _batch_progress(ctx: ConsoleContext, batch_id: str) -> None:
    try:
        progress = batch_progress(ctx.queue, batch_id)
    except Exception:   # an old or half-written batch: its details still show
        return
    st.progress(progress["fraction"], text=f"{progress['done']:,} of {progress['total']:,} queries "
                f"done · {progress['completed']:,} completed · {progress['failed']:,} failed · "
                f"{progress['cancelled']:,} cancelled")
    left, right = st.columns(2)
    with left:
        page_link("batches", "Open the batch", ":material/stacks:",
                  query_params={"batch": batch_id})
    with right:
        page_link("tasks", "List its queries here", ":material/filter_list:",
                  query_params={"batch": batch_id})


def _detail_actions(ctx: ConsoleContext, record: dict[str, Any], allowed: set[str]) -> None:
    task_id = record["task_id"]
    # The priority on a row of its own: beside four buttons it leaves each too narrow for
    # its label in a 1024 px window.
    st.columns([1, 2])[0].selectbox("Priority for retry / requeue",
                                    [KEEP_PRIORITY, *PRIORITY_NAMES], key=f"{KEY}_detail_priority")
    columns = st.columns(4, vertical_alignment="bottom")
    for column, action in zip(columns, ACTIONS):
        column.button(f"{action.capitalize()} task", key=f"{KEY}_detail_{action}",
                      disabled=action not in allowed, width="stretch",
                      on_click=_act_on_open_task, args=(ctx, action, task_id))


def _act_on_open_task(ctx: ConsoleContext, action: str, task_id: str) -> None:
    st.session_state[ACTED] = True
    # Read the priority now: arguments bound when the button was drawn would be stale.
    chosen = st.session_state.get(f"{KEY}_detail_priority", KEEP_PRIORITY)
    priority = None if chosen == KEEP_PRIORITY or action not in ("retry", "requeue") else chosen
    _act(ctx, action, [task_id], priority=priority)
