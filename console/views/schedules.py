"""Schedules: tasks waiting for a due time (run now, cancel, delete) and recurring schedules.

The page of waiting tasks lives in the URL (``/Schedules?page=3``), like the other pages'
filters (console/url_state.py).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import pandas as pd
import streamlit as st

from engine import AgentTask, TaskScheduler, ValidationError, clock

from ..components import (REDIS_DOWN, clear_selection, flash, live, redis_guard, run_action,
                          selectable_table, selected_rows, selection_header, show_flash, turn_page,
                          updated_caption)
from ..data import query_preview, scheduled_frame
from ..shared import queue_changed, shared_counts, shared_read
from ..forms import PRIORITY_OPTIONS, check_query
from ..runtime import ConsoleContext
from ..text import md
from ..timefmt import local_text, operator_zone, zone_label
from ..theme import status_label
from ..url_state import UrlParam, UrlState

KEY = "schedules"
RECURRING = "recurring"
PAGE_SIZE = 100
# The columns that say what waits and why first, in widths that fit the main area of a
# 1024 px window (about 560 px, the selection boxes included); the rest scrolls.
WAITING_ORDER = ["Due in", "Status", "Task id", "Query", "Error", "Due (UTC)", "Type",
                 "Priority", "Attempts"]
WAITING_COLUMNS = {"Due in": st.column_config.TextColumn(width=80),
                   "Task id": st.column_config.TextColumn(width=112),
                   "Query": st.column_config.TextColumn(width=100),
                   "Error": st.column_config.TextColumn(width=110),
                   "Due (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")}
RECURRING_ORDER = ["Name", "State", "Next run", "Last error", "Cron", "Timezone", "Last run",
                   "Fires", "Skipped", "Task"]
URL = UrlState(KEY, (UrlParam("page", f"{KEY}_page", 0, "page"),), markers=(f"{KEY}_prev",),
               on_apply=lambda: clear_selection(KEY))
TIME = "YYYY-MM-DD HH:mm:ss"


def render(ctx: ConsoleContext) -> None:
    """Draw the Schedules page."""
    URL.restore()
    st.subheader("Waiting for a due time")
    st.caption("Tasks submitted to run later, and retries waiting out their delay, soonest first. "
               "Workers move each one into its queue when it is due.")
    live(_live_body, ctx, seconds=ctx.refresh_seconds)
    st.divider()
    st.subheader("Recurring schedules")
    scheduler = TaskScheduler(ctx.queue)
    _add_schedule_form(scheduler)
    live(_recurring_body, ctx, scheduler, seconds=ctx.refresh_seconds)


def _live_body(ctx: ConsoleContext) -> None:
    show_flash(KEY)
    with redis_guard("the scheduled tasks"):
        page = st.session_state.get(f"{KEY}_page", 0)
        stats = shared_counts(ctx.queue).stats
        waiting = stats.scheduled_tasks + stats.retry_tasks
        st.metric("Waiting for a due time", f"{waiting:,}",
                  help=f"{stats.scheduled_tasks:,} scheduled, {stats.retry_tasks:,} retries waiting")
        records, rows, paused = selectable_table(
            KEY, lambda: shared_read(ctx.queue, "scheduled", lambda: ctx.queue.list_scheduled(
                limit=PAGE_SIZE, offset=page * PAGE_SIZE), page),
            lambda recs: scheduled_frame(recs, clock.now_ms()),
            column_config=WAITING_COLUMNS, column_order=WAITING_ORDER)
        pages = max(1, -(-waiting // PAGE_SIZE))
        previous, where, following = st.columns([1, 2, 1], vertical_alignment="center")
        previous.button("Previous page", key=f"{KEY}_prev", disabled=page <= 0,
                        on_click=turn_page, args=(KEY, -1), width="stretch")
        where.caption(f"Page {page + 1} of {pages}")
        following.button("Next page", key=f"{KEY}_next", disabled=page + 1 >= pages,
                         on_click=turn_page, args=(KEY, 1), width="stretch")
        selected = [records[i]["task_id"] for i in rows]
        if selected:
            _selection_bar(ctx, selected, paused)
        updated_caption()
    URL.publish()



def _selection_bar(ctx: ConsoleContext, selected: list[str], paused: bool) -> None:
    with st.container(border=True, key=f"{KEY}_selection"):
        selection_header(len(selected), paused)
        run, cancel, delete, clear = st.columns(4)
        run.button("Run selected now", key=f"{KEY}_run_now", type="primary", width="stretch",
                   on_click=_act, args=(ctx, "requeue", selected))
        cancel.button("Cancel selected", key=f"{KEY}_cancel", width="stretch",
                      on_click=_act, args=(ctx, "cancel", selected))
        delete.button("Delete selected", key=f"{KEY}_delete", width="stretch",
                      on_click=_act, args=(ctx, "delete", selected))
        clear.button("Clear selection", key=f"{KEY}_clear", width="stretch",
                     on_click=clear_selection, args=(KEY,))


def _act(ctx: ConsoleContext, action: str, task_ids: Sequence[str]) -> None:
    report = run_action(ctx.queue, KEY, action, task_ids)
    if report is None:
        return
    text = report.summary()
    if action == "requeue":
        text = text.replace("Requeued", "Moved", 1) + " They run as soon as a worker is free."
    flash(KEY, report.level, text)
    clear_selection(KEY)


# -- recurring schedules (engine.scheduler) ------------------------------------------------------
VERBS: tuple[tuple[str, str, Callable[[TaskScheduler, str], Any]], ...] = (
    # (button label, key suffix, what it does to one schedule)
    ("Run schedule now", "run_schedule_now", TaskScheduler.run_schedule_now),
    ("Pause schedule", "pause_schedule", TaskScheduler.pause_schedule),
    ("Resume schedule", "resume_schedule", TaskScheduler.resume_schedule),
    ("Remove schedule", "remove_schedule", TaskScheduler.remove_schedule),
)
SCHEDULE_COLUMNS = ["Name", "State", "Cron", "Timezone", "Next run", "Last run", "Fires",
                    "Skipped", "Task", "Last error"]


def schedules_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Recurring schedules (``TaskScheduler.list_schedules`` rows) as a table."""
    out = []
    for r in rows:
        task = r.get("task") or {}
        state = "paused" if r.get("paused") else "active"
        out.append({"Name": r["name"], "State": status_label(state),
                    "Cron": r.get("cron"), "Timezone": r.get("timezone"),
                    "Next run": local_text(r.get("next_run"),
                                           empty="paused" if r.get("paused") else "—"),
                    "Last run": local_text(r.get("last_run"), empty="never"),
                    "Fires": r.get("fires") or 0, "Skipped": r.get("skipped") or 0,
                    "Task": f"{task.get('task_type', '?')}: {query_preview(task.get('payload'))}",
                    "Last error": r.get("last_error") or ""})
    return pd.DataFrame(out, columns=SCHEDULE_COLUMNS)


def _recurring_body(ctx: ConsoleContext, scheduler: TaskScheduler) -> None:
    show_flash(RECURRING)
    with redis_guard("the recurring schedules"):
        schedules = scheduler.list_schedules()
        if not schedules and not selected_rows(RECURRING):
            st.caption("No recurring schedule is defined.")
            return
        zone = zone_label(operator_zone())
        rows, picked, _ = selectable_table(
            RECURRING, lambda: schedules, schedules_frame,
            column_config={"Name": st.column_config.TextColumn(width=110),
                           "Next run": st.column_config.TextColumn(
                               width=150, help=f"In your time zone, {zone}"),
                           "Last error": st.column_config.TextColumn(width=130),
                           "Last run": st.column_config.TextColumn(
                               help=f"In your time zone, {zone}")},
            column_order=RECURRING_ORDER)
        names = [rows[i]["name"] for i in picked]
        if names:
            for column, (label, suffix, verb) in zip(st.columns(len(VERBS)), VERBS):
                column.button(label, key=f"{RECURRING}_{suffix}", width="stretch",
                              on_click=_schedule_verb, args=(scheduler, label, verb, names))
        updated_caption()


def _schedule_verb(scheduler: TaskScheduler, label: str,
                   verb: Callable[[TaskScheduler, str], Any], names: list[str]) -> None:
    done, failed = 0, []
    for name in names:
        try:
            verb(scheduler, name)
            done += 1
        # No such schedule (any more), a time zone gone from this host, Redis down:
        # report it with the others, never crash the page.
        except (*REDIS_DOWN, ValueError, KeyError) as exc:
            failed.append(f"{name}: {exc}")
    queue_changed(scheduler.queue)
    flash(RECURRING, "warning" if failed else "success",
          f"{label}: done for {done} schedule{'s' if done != 1 else ''}."
          + (f" Failed: {'; '.join(failed)}" if failed else ""))
    clear_selection(RECURRING)


def _add_schedule_form(scheduler: TaskScheduler) -> None:
    k = f"{RECURRING}_add"
    with st.expander("Add a recurring schedule"):
        errors = st.session_state.get(f"{k}_errors", {})
        with st.form(f"{k}_form", border=False):
            name, cron, zone = st.columns(3)
            name.text_input("Schedule name", key=f"{k}_name", placeholder="nightly-report")
            cron.text_input("Cron expression", key=f"{k}_cron", placeholder="*/15 * * * *",
                            help="Five fields (minute hour day month weekday), or @hourly, @daily…")
            st.session_state.setdefault(f"{k}_tz", "UTC")
            zone.text_input("Timezone", key=f"{k}_tz", help="An IANA name, e.g. Europe/Paris")
            st.text_area("Query", key=f"{k}_query", height=80)
            st.session_state.setdefault(f"{k}_priority", "normal")
            st.selectbox("Priority", PRIORITY_OPTIONS, key=f"{k}_priority")
            for problem in errors.values():
                st.error(md(problem), icon=":material/front_hand:")
            st.form_submit_button("Add schedule", type="primary", on_click=_add_schedule,
                                  args=(scheduler, k))


def _add_schedule(scheduler: TaskScheduler, k: str) -> None:
    state = st.session_state
    errors = {}
    name = (state.get(f"{k}_name") or "").strip()
    cron = (state.get(f"{k}_cron") or "").strip()
    if not name:
        errors["name"] = "Give the schedule a name."
    if not cron:
        errors["cron"] = "Enter a cron expression, e.g. */15 * * * *."
    if (problem := check_query(state.get(f"{k}_query"))) is not None:
        errors["query"] = problem
    state[f"{k}_errors"] = errors
    if errors:
        return
    task = AgentTask({"query": state[f"{k}_query"].strip()}, priority=state.get(f"{k}_priority"))
    try:
        scheduler.add_schedule(name, cron, task, timezone=(state.get(f"{k}_tz") or "").strip() or None)
    except (ValidationError, ValueError) as exc:
        state[f"{k}_errors"] = {"schedule": str(exc)}
        return
    except REDIS_DOWN as exc:
        state[f"{k}_errors"] = {"schedule": f"Not added: Redis did not answer ({exc})."}
        return
    queue_changed(scheduler.queue)
    flash(RECURRING, "success", f"Added schedule {name} ({cron}).")
    # An empty form: the same schedule is not one click away from being added twice.
    for field, empty in (("name", ""), ("cron", ""), ("query", ""), ("tz", "UTC"),
                         ("priority", "normal")):
        state[f"{k}_{field}"] = empty
