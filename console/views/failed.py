"""Failed tasks (dead letters): grouped by error; retry all, retry selected, purge."""
from __future__ import annotations

from typing import Sequence

import streamlit as st

from ..actions import retry_all_failed
from ..components import (REDIS_DOWN, clear_selection, flash, live, page_link, redis_guard,
                          run_action, selectable_table, show_flash, updated_caption)
from ..data import count_text, failed_groups_frame, failed_tasks_frame, load_counts
from ..shared import queue_changed, shared_read
from ..runtime import ConsoleContext

KEY = "failed"
GROUPS = f"{KEY}_groups"
TASKS = f"{KEY}_tasks"
GROUP_SCAN = 2000
TASKS_SHOWN = 200
TIME = "YYYY-MM-DD HH:mm:ss"


def render(ctx: ConsoleContext) -> None:
    """Draw the Failed tasks page."""
    st.caption("Tasks that used up their attempts. Retrying gives a task a fresh set of attempts; "
               "purging deletes every failed task for good.")
    _whole_queue_actions(ctx)
    live(_live_body, ctx, seconds=ctx.refresh_seconds)


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


def _live_body(ctx: ConsoleContext) -> None:
    show_flash(KEY)
    with redis_guard("the failed tasks"):
        counts = shared_read(ctx.queue, "counts", lambda: load_counts(ctx.queue))
        groups, picked, paused = selectable_table(
            GROUPS, lambda: shared_read(ctx.queue, "failed_groups",
                                        lambda: ctx.queue.failed_task_groups(scan_limit=GROUP_SCAN)),
            failed_groups_frame,
            column_config={"Error": st.column_config.TextColumn(width="large"),
                           "Last failed (UTC)": st.column_config.DatetimeColumn(format=TIME),
                           "First failed (UTC)": st.column_config.DatetimeColumn(format=TIME)})
        total = counts.stats.failed_in_index
        batches = counts.batches_in("failed")
        st.caption(f"{counts.dead_letter_tasks:,} failed tasks"
                   + (f" and {count_text(batches, counts.batches_exact('failed'))} failed batches"
                      if batches else "")
                   + f" stored, in {len(groups)} error groups"
                   + (f" (grouping looks at the newest {GROUP_SCAN:,})" if total > GROUP_SCAN else "")
                   + (" · paused while a group is selected" if paused else "")
                   + ". Select groups to see and retry their tasks.")
        chosen = [groups[i] for i in picked]
        if chosen:
            ids = [task_id for g in chosen for task_id in g["task_ids"]]
            left, middle, right = st.columns(3)
            left.button("Retry group", key=f"{KEY}_retry_group", type="primary", width="stretch",
                        on_click=_act, args=(ctx, "retry", ids))
            middle.button("Delete group", key=f"{KEY}_delete_group", width="stretch",
                          on_click=_act, args=(ctx, "delete", ids))
            right.button("Clear group selection", key=f"{KEY}_clear_groups", width="stretch",
                         on_click=clear_selection, args=(GROUPS,))
        _tasks_table(ctx, chosen)
        updated_caption()


def _tasks_table(ctx: ConsoleContext, chosen: list[dict]) -> None:
    if chosen:
        ids = [task_id for g in chosen for task_id in g["task_ids"]][:TASKS_SHOWN]
        st.markdown(f"**Tasks in the selected group{'s' if len(chosen) > 1 else ''}**")
        fetch = lambda: [r for r in ctx.queue.get_task_statuses(ids) if r]  # noqa: E731
    else:
        st.markdown("**Newest failed tasks**")
        fetch = lambda: shared_read(ctx.queue, "failed_newest", lambda: ctx.queue.search_tasks(  # noqa: E731
            status="failed", limit=TASKS_SHOWN)["tasks"])
    records, rows, _ = selectable_table(
        TASKS, fetch, failed_tasks_frame,
        column_config={"Error": st.column_config.TextColumn(width="large"),
                       "Failed at (UTC)": st.column_config.DatetimeColumn(format=TIME)})
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
