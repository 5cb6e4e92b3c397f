"""Widgets any Streamlit app can embed. Both take a ``key`` prefix, so two copies on
one page never collide, and find the queue themselves when not given one."""
from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from engine import TaskQueue
from engine.agent import AgentExecutor

from .components import (form_generation, live, next_form_generation, plain_table, redis_guard,
                         submission_key, updated_caption)
from .data import query_preview, record_status, summary_numbers
from .forms import PRIORITY_OPTIONS, Checked, check_common, check_query
from .progress_view import task_progress
from .runtime import default_queue
from .live_panel import live_panel
from .panel import Panel
from .shared import shared_counts
from .text import md
from .theme import FINISHED, status_label

MONITOR_MAX_WATCHED = 20
MONITOR_MAX_GROWING = 3     # running answers drawn in full under the table (the newest)
SUMMARY_HELP = {
    "Pending": "Tasks waiting in line", "Running": "Tasks held by a worker now (batches "
    "not counted)", "Completed": "Tasks completed over the queue's life (a batch's queries "
    "count, the batch does not)", "Failed": "Tasks failed over the queue's life",
    "Batches running": "Batches whose queries are not all done",
    "Workers": "Workers with a recent heartbeat",
    "Success rate": "Completed / (completed + failed) tasks",
}


# -- compact summary -----------------------------------------------------------------------
def render_task_queue_dashboard(queue: TaskQueue | None = None, *, key: str = "task_queue_dashboard",
                                container: Any = None, refresh_seconds: float | None = None,
                                title: str = "Queue") -> None:
    """The compact live summary: Pending, Running, Completed, Failed, Workers and
    Success rate, drawn into ``container`` (default: the sidebar).

    ``queue`` defaults to the console's cached queue; ``refresh_seconds`` to the
    ``CONSOLE_REFRESH_SECONDS`` setting (0: draw once, no refresh).
    """
    queue = queue if queue is not None else default_queue()
    seconds = queue.settings.console_refresh_seconds if refresh_seconds is None else refresh_seconds
    with container if container is not None else st.sidebar:
        # The container key becomes a CSS class (st-key-<key>): a browser test can find
        # this copy of the summary among others.
        with st.container(key=key, border=True):
            live_panel(queue, f"{key}_panel", "the queue summary",
                       lambda: summary_panel(queue, title), title, seconds=seconds)


def summary_panel(queue: TaskQueue, title: str = "Queue") -> Panel:
    """The summary's numbers, two a row, under ``title``."""
    numbers = summary_numbers(shared_counts(queue))
    return Panel().heading(title).metrics(
        [(label, value, SUMMARY_HELP.get(label, "")) for label, value in numbers.items()],
        per_row=2)


# -- submit and watch ---------------------------------------------------------------------------
def render_task_monitor(agent_executor: AgentExecutor, *, key: str = "task_monitor",
                        queue: TaskQueue | None = None,
                        refresh_seconds: float | None = None) -> None:
    """A panel to submit queries through ``agent_executor`` and watch them finish.

    The executor's own queue is used when it has one; otherwise ``queue``, else the
    console's cached queue is bound to it (an unbound ``AgentExecutor`` would otherwise
    build a queue from the environment's defaults).
    """
    queue = _bind_queue(agent_executor, queue)
    seconds = queue.settings.console_refresh_seconds if refresh_seconds is None else refresh_seconds
    with st.container(key=key, border=True):
        _monitor_form(agent_executor, key)
        live(watched_tasks, queue, key, seconds=seconds)


def _bind_queue(executor: AgentExecutor, queue: TaskQueue | None) -> TaskQueue:
    if executor.has_queue:
        return executor.queue
    # Unbound, AgentExecutor.queue would build one from the environment's defaults.
    executor.bind_queue(queue if queue is not None else default_queue())
    return executor.queue


def _monitor_form(executor: AgentExecutor, key: str) -> None:
    errors = st.session_state.get(f"{key}_errors", {})
    generation = form_generation(key)
    with st.form(f"{key}_form", clear_on_submit=False, border=False):
        st.text_area("Query", key=f"{key}_query", height=90,
                     placeholder="Ask the agent something…")
        if errors.get("query"):
            st.error(md(errors["query"]))
        left, right = st.columns(2)
        left.selectbox("Priority", PRIORITY_OPTIONS, index=2, key=f"{key}_priority")
        right.text_input("Session id", key=f"{key}_session", placeholder="optional")
        if errors.get("session_id"):
            right.error(md(errors["session_id"]))
        # The generation in the button's key and in the idempotency key: a double click
        # submits once (see console.components.form_generation).
        st.form_submit_button("Submit", type="primary", key=f"{key}_submit_{generation}",
                              on_click=_monitor_submit, args=(executor, key, generation))


def _monitor_submit(executor: AgentExecutor, key: str, generation: int) -> None:
    state = st.session_state
    query = state.get(f"{key}_query", "")
    errors: dict[str, str] = {}
    if (problem := check_query(query)) is not None:
        errors["query"] = problem
    common = Checked()
    check_common(common, state.get(f"{key}_priority"), state.get(f"{key}_session"), 0)
    errors.update(common.errors)
    state[f"{key}_errors"] = errors
    if errors:
        return
    idempotency_key = submission_key(f"monitor:{key}", generation, query.strip())
    try:
        task_id = executor.execute_async(query.strip(), session_id=common.options["session_id"],
                                         priority=common.options["priority"],
                                         idempotency_key=idempotency_key)
    except Exception as exc:   # a Redis outage or a rejected task: say so next to the field
        state[f"{key}_errors"] = {"query": f"Not submitted: {exc}"}
        return
    next_form_generation(key)
    state[f"{key}_query"] = ""
    watched = state.setdefault(f"{key}_watched", [])
    if task_id not in watched:   # else the same click again: the engine gave back the task
        watched.insert(0, task_id)
        del watched[MONITOR_MAX_WATCHED:]


def watched_tasks(queue: TaskQueue, key: str) -> None:
    """The status and answer of each task id in ``st.session_state[key + "_watched"]``:
    one Redis round trip, one more for the progress and answers so far of those running,
    plus one per task the first time it is seen finished."""
    watched: list[str] = st.session_state.get(f"{key}_watched", [])
    if not watched:
        st.caption("Submitted queries appear here with their answers.")
        return
    answers: dict[str, str] = st.session_state.setdefault(f"{key}_answers", {})
    with redis_guard("the watched tasks"):
        statuses = queue.get_task_statuses(watched)
        states = [record_status(status) if status else None for status in statuses]
        running = [task_id for task_id, state in zip(watched, states) if state == "running"]
        growing = dict(zip(running, queue.get_task_progress(running))) if running else {}
        rows = []
        for task_id, state in zip(watched, states):
            if state in FINISHED and task_id not in answers:
                # A finished task's result never changes: read it once, keep it.
                answers[task_id] = _read_outcome(queue, task_id)
            now = growing.get(task_id, {})
            rows.append({"Status": status_label(state) if state else "gone",
                         "Progress": now.get("progress"),
                         "Answer / error": answers.get(task_id) or now.get("partial", ""),
                         "Task id": task_id})
        plain_table(f"{key}_watch_table", pd.DataFrame(rows),
                    column_config={"Answer / error": st.column_config.TextColumn(width="large"),
                                   "Progress": st.column_config.ProgressColumn(
                                       min_value=0.0, max_value=1.0, format="percent",
                                       width="small")})
        for task_id in running[:MONITOR_MAX_GROWING]:
            if growing[task_id]["partial"] or growing[task_id]["progress"] is not None:
                st.caption(f"Task {md(task_id)}, running")
                task_progress({"status": "running", **growing[task_id]}, f"{key}_{task_id}")
        finished = [(task_id, answers[task_id]) for task_id in watched if answers.get(task_id)]
        if finished:
            # A table cell shows the start of an answer: here each one is there in full.
            with st.expander(f"Answers in full ({len(finished)})"):
                for task_id, text in finished:
                    st.caption(f"Task {md(task_id)}")
                    st.code(text, language=None, wrap_lines=True)
        updated_caption()


def _read_outcome(queue: TaskQueue, task_id: str) -> str:
    try:
        return _outcome_text(queue.get_task_result(task_id))
    except (ValueError, RecursionError):     # a result document that is not JSON
        return "corrupt result: it could not be read"


def _outcome_text(doc: dict[str, Any] | None) -> str:
    if not doc:
        return ""
    if doc.get("status") != "completed":
        return doc.get("error") or doc.get("status") or ""
    result = doc.get("result")
    if isinstance(result, dict) and "answer" in result:
        return str(result["answer"])
    return query_preview({"query": result if isinstance(result, str) else str(result)}, 400)
