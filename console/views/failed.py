"""Failed tasks (dead letters): grouped by error; retry all, retry selected, purge.

The filters and the open error groups live in the URL
(``/Failed_tasks?type=agent_query&error=quota&group=<first line of the error>``): a link can
be shared, Back and Forward step through them, and they come back when the operator
returns to the page.
"""
from __future__ import annotations

from typing import Sequence

import streamlit as st

from ..actions import retry_all_failed
from ..components import (REDIS_DOWN, clear_selection, flash, live, page_link, redis_guard,
                          run_action, selectable_table, show_flash, updated_caption)
from ..data import count_text, failed_groups_frame, failed_tasks_frame
from ..shared import queue_changed, shared_counts, shared_read
from ..runtime import ConsoleContext
from ..text import md
from ..url_state import UrlParam, UrlState

KEY = "failed"
GROUPS = f"{KEY}_groups"
TASKS = f"{KEY}_tasks"
GROUP_SCAN = 2000
TASKS_SHOWN = 200
TIME = "YYYY-MM-DD HH:mm:ss"
# The tables' columns that matter most come first, in widths that fit the main area of a
# 1024 px window (about 560 px, the selection boxes included); the rest scrolls, and a
# wider window shares the room left among the columns.
SHORT_TIME = "MM-DD HH:mm:ss"
OPEN = f"{KEY}_open_groups"         # first lines of the errors whose tasks are listed
PICKED = f"{KEY}__picked"           # whether OPEN came from the table's selection


def _url_changed() -> None:
    st.session_state.pop(PICKED, None)
    clear_selection(GROUPS)
    clear_selection(TASKS)


URL = UrlState(KEY, (UrlParam("type", f"{KEY}_type"), UrlParam("error", f"{KEY}_error"),
                     UrlParam("group", OPEN, (), "list")),
               markers=(f"{KEY}_type",), on_apply=_url_changed)


def render(ctx: ConsoleContext) -> None:
    """Draw the Failed tasks page."""
    st.caption("Tasks that used up their attempts. Retrying gives a task a fresh set of attempts; "
               "purging deletes every failed task for good.")
    _whole_queue_actions(ctx)
    URL.restore()
    left, right = st.columns(2, vertical_alignment="bottom")
    task_type = left.text_input("Task type", key=f"{KEY}_type", placeholder="any",
                                on_change=_filters_changed)
    error = right.text_input("Error contains", key=f"{KEY}_error", on_change=_filters_changed,
                             placeholder="words from the error")
    live(_live_body, ctx, task_type.strip(), error.strip(), seconds=ctx.refresh_seconds)


def _filters_changed() -> None:
    st.session_state[OPEN] = []
    _url_changed()


def _matches(task_type: str, error: str, types: Sequence[str], text: str | None) -> bool:
    return ((not task_type or task_type in types)
            and (not error or error.lower() in (text or "").lower()))


def _whole_queue_actions(ctx: ConsoleContext) -> None:
    with st.container(border=True, key=f"{KEY}_all"):
        left, middle, right = st.columns([2, 1, 1], vertical_alignment="bottom")
        confirmed = left.checkbox("Yes, act on every failed task", key=f"{KEY}_confirm")
        middle.button("Retry all failed", key=f"{KEY}_retry_all", type="primary",
                      disabled=not confirmed, on_click=_retry_all, args=(ctx,), width="stretch")
        right.button("Purge failed", key=f"{KEY}_purge", disabled=not confirmed,
                     on_click=_purge, args=(ctx,), width="stretch")


def _retry_all(ctx: ConsoleContext) -> None:
    try:
        report = retry_all_failed(ctx.queue)
        queue_changed(ctx.queue)
    except REDIS_DOWN as exc:
        flash(KEY, "error", f"Redis did not answer: {exc}")
        return
    flash(KEY, report.level if report.done else "warning",
          report.summary() if report.done or report.skipped else "No failed task to retry.")
    _reset()


def _purge(ctx: ConsoleContext) -> None:
    try:
        deleted = ctx.queue.purge("failed")
        queue_changed(ctx.queue)
    except REDIS_DOWN as exc:
        flash(KEY, "error", f"Redis did not answer: {exc}")
        return
    flash(KEY, "success", f"Purged {deleted:,} failed tasks.")
    _reset()


def _reset() -> None:
    st.session_state[f"{KEY}_confirm"] = False
    clear_selection(GROUPS)
    clear_selection(TASKS)


def _live_body(ctx: ConsoleContext, task_type: str, error: str) -> None:
    show_flash(KEY)
    with redis_guard("the failed tasks"):
        counts = shared_counts(ctx.queue)
        groups, picked, paused = selectable_table(
            GROUPS, lambda: [g for g in shared_read(
                ctx.queue, "failed_groups",
                lambda: ctx.queue.failed_task_groups(scan_limit=GROUP_SCAN))
                if _matches(task_type, error, g["task_types"], g["error"])],
            failed_groups_frame,
            column_config={"Error": st.column_config.TextColumn(width=220),
                           "Count": st.column_config.NumberColumn(width=56),
                           "Task types": st.column_config.TextColumn(width=110),
                           "Last failed (UTC)": st.column_config.DatetimeColumn(
                               format=SHORT_TIME, width=112),
                           "First failed (UTC)": st.column_config.DatetimeColumn(format=TIME)})
        total = counts.stats.failed_in_index
        batches = counts.batches_in("failed")
        st.caption(f"{counts.dead_letter_tasks:,} failed tasks"
                   + (f" and {count_text(batches, counts.batches_exact('failed'))} failed batches"
                      if batches else "")
                   + f" stored, in {len(groups)} error groups"
                   + (" matching the filters" if task_type or error else "")
                   + (f" (grouping looks at the newest {GROUP_SCAN:,})" if total > GROUP_SCAN else "")
                   + (" · paused while a group is selected" if paused else "")
                   + ". Select groups to see and retry their tasks.")
        chosen = _open_groups(groups, picked)
        if chosen:
            ids = [task_id for g in chosen for task_id in g["task_ids"]]
            left, middle, right = st.columns(3)
            left.button("Retry group", key=f"{KEY}_retry_group", type="primary", width="stretch",
                        on_click=_act, args=(ctx, "retry", ids))
            middle.button("Delete group", key=f"{KEY}_delete_group", width="stretch",
                          on_click=_act, args=(ctx, "delete", ids))
            right.button("Close the group" + ("s" if len(chosen) > 1 else ""),
                         key=f"{KEY}_clear_groups", width="stretch", on_click=_close_groups)
        _tasks_table(ctx, chosen, task_type, error)
        updated_caption()
    URL.publish()


def _open_groups(groups: list[dict], picked: list[int]) -> list[dict]:
    """The groups whose tasks are listed: the selected rows, or else the groups a link
    named (``?group=...``); clearing the selection closes them."""
    state = st.session_state
    if picked:
        state[OPEN] = [groups[i]["error"] for i in picked]
        state[PICKED] = True
    elif state.pop(PICKED, False):
        state[OPEN] = []
    wanted = state.get(OPEN) or []
    return [g for g in groups if g["error"] in wanted]


def _close_groups() -> None:
    st.session_state[OPEN] = []
    st.session_state.pop(PICKED, None)
    clear_selection(GROUPS)


def _tasks_table(ctx: ConsoleContext, chosen: list[dict], task_type: str, error: str) -> None:
    if chosen:
        ids = [task_id for g in chosen for task_id in g["task_ids"]][:TASKS_SHOWN]
        st.markdown(f"**Tasks in the error group{'s' if len(chosen) > 1 else ''} "
                    + ", ".join(f"“{md(g['error'], 120)}”" for g in chosen[:3]) + "**")
        fetch = lambda: [r for r in ctx.queue.get_task_statuses(ids)  # noqa: E731
                         if r and _matches(task_type, "", [r.get("task_type")], None)]
    else:
        st.markdown("**Newest failed tasks**" + (" matching the filters" if task_type or error
                                                  else ""))
        fetch = lambda: [r for r in shared_read(  # noqa: E731
            ctx.queue, "failed_newest", lambda: ctx.queue.search_tasks(
                status="failed", task_type=task_type or None, limit=TASKS_SHOWN)["tasks"],
            task_type) if _matches("", error, (), r.get("error"))]
    records, rows, _ = selectable_table(
        TASKS, fetch, failed_tasks_frame,
        column_config={"Task id": st.column_config.TextColumn(width=112),
                       "Error": st.column_config.TextColumn(width=170),
                       "Worker": st.column_config.TextColumn(width=110),
                       "Failed at (UTC)": st.column_config.DatetimeColumn(
                           format=SHORT_TIME, width=112)},
        column_order=["Task id", "Error", "Worker", "Failed at (UTC)", "Type", "Priority",
                      "Attempts"])
    selected = [records[i]["task_id"] for i in rows]
    if selected:
        left, middle, right = st.columns(3)
        left.button("Retry selected", key=f"{KEY}_retry_selected", type="primary", width="stretch",
                    on_click=_act, args=(ctx, "retry", selected))
        middle.button("Delete selected", key=f"{KEY}_delete_selected", width="stretch",
                      on_click=_act, args=(ctx, "delete", selected))
        if len(selected) == 1:
            with right:
                page_link("tasks", "Open in Tasks", ":material/open_in_new:",
                          query_params={"task": selected[0]})


def _act(ctx: ConsoleContext, action: str, task_ids: Sequence[str]) -> None:
    report = run_action(ctx.queue, KEY, action, task_ids)
    if report is None:
        return
    flash(KEY, report.level, report.summary())
    clear_selection(GROUPS)
    clear_selection(TASKS)
