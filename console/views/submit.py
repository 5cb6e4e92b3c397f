"""Submit: one query, a batch of queries, or a CSV; then watch batches and download results.

Each form sends once: its submit button's key and its idempotency key carry the form's
generation (see ``console.components.form_generation``), so a double click, or a click
sent again before the page redrew, returns the first task or batch instead of a second;
after a success the form is emptied (the CSV uploader replaced by a fresh one).
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import streamlit as st

from engine import TaskNotFound, ValidationError
from engine.agent import AgentExecutor

from ..batch_jobs import (BatchJob, batch_progress, describe_blank_rows, guess_query_column,
                          queries_from_column, read_csv, results_csv, submit_batch, submit_csv)
from ..components import (REDIS_DOWN, flash, form_generation, live, next_form_generation, page_link,
                          plain_table, redis_guard, show_flash, submission_key, updated_caption)
from ..forms import (PRIORITY_OPTIONS, WHEN_AT, WHEN_DELAY, WHEN_OPTIONS, Checked, check_batch,
                     check_common, check_single)
from ..runtime import ConsoleContext
from ..text import md
from ..widgets import watched_tasks

KEY = "submit"
BATCHES = f"{KEY}_batches"
MAX_BATCHES_SHOWN = 10


def render(ctx: ConsoleContext) -> None:
    """Draw the Submit page."""
    single, batch, upload = st.tabs(["Single query", "Batch of queries", "CSV upload"])
    with single:
        _single(ctx)
    with batch:
        _batch_text(ctx)
    with upload:
        _csv(ctx)
    st.divider()
    st.subheader("Batches")
    _watch_batch_by_id(ctx)
    live(_batches_body, ctx, seconds=ctx.refresh_seconds)


def _field_error(errors: dict[str, str], name: str) -> None:
    if errors.get(name):
        st.error(md(errors[name]), icon=":material/front_hand:")


# -- one query ---------------------------------------------------------------------------------
def _single(ctx: ConsoleContext) -> None:
    k = f"{KEY}_single"
    errors = st.session_state.get(f"{k}_errors", {})
    generation = form_generation(k)
    # Outside the form: choosing "when" shows the matching field at once.
    when = st.radio("When to run", WHEN_OPTIONS, horizontal=True, key=f"{k}_when")
    with st.form(f"{k}_form", border=True):
        st.text_area("Query", key=f"{k}_query", height=110, placeholder="What should the agent do?")
        _field_error(errors, "query")
        _common_fields(ctx, k, errors)
        if when == WHEN_AT:
            st.session_state.setdefault(f"{k}_run_at", _default_run_at())
            st.datetime_input("Run at (UTC)", key=f"{k}_run_at", step=timedelta(minutes=1),
                              format="YYYY-MM-DD", help="Times are UTC: the browser and the "
                              "server may be in different time zones.")
            _field_error(errors, "run_at")
        elif when == WHEN_DELAY:
            st.number_input("Delay (seconds)", min_value=0, value=60, step=10, key=f"{k}_delay")
            _field_error(errors, "delay")
        st.form_submit_button("Submit query", type="primary", key=f"{k}_submit_{generation}",
                              on_click=_submit_single, args=(ctx, k, generation))
    show_flash(k)
    watched = st.session_state.get(f"{k}_watched")
    if watched:
        page_link("tasks", "Open the last one in Tasks", ":material/open_in_new:",
                  query_params={"task": watched[0]})
        live(watched_tasks, ctx.queue, k, seconds=ctx.refresh_seconds)


def _default_run_at() -> datetime:
    soon = datetime.now(timezone.utc) + timedelta(minutes=10)
    return soon.replace(second=0, microsecond=0, tzinfo=None)


def _common_fields(ctx: ConsoleContext, k: str, errors: dict[str, str]) -> None:
    priority, session, retries = st.columns(3)
    with priority:
        st.selectbox("Priority", PRIORITY_OPTIONS, index=2, key=f"{k}_priority")
        _field_error(errors, "priority")
    with session:
        st.text_input("Session id", key=f"{k}_session", placeholder="optional")
        _field_error(errors, "session_id")
    with retries:
        st.number_input("Max retries", min_value=0, max_value=100, step=1,
                        value=ctx.settings.default_max_retries, key=f"{k}_retries")
        _field_error(errors, "max_retries")


def _submit_single(ctx: ConsoleContext, k: str, generation: int) -> None:
    state = st.session_state
    when = state.get(f"{k}_when")
    checked = check_single(state.get(f"{k}_query"), state.get(f"{k}_priority"),
                           state.get(f"{k}_session"), state.get(f"{k}_retries"), when,
                           state.get(f"{k}_run_at") if when == WHEN_AT else None,
                           state.get(f"{k}_delay") if when == WHEN_DELAY else None,
                           datetime.now(timezone.utc))
    state[f"{k}_errors"] = checked.errors
    if not checked.ok:
        return
    options = dict(checked.options)
    query = options.pop("query")
    key = submission_key("query", generation, query, when, options.get("run_at"),
                         options.get("delay"))
    try:
        task_id = AgentExecutor(queue=ctx.queue).execute_async(query, idempotency_key=key,
                                                                **options)
    except REDIS_DOWN as exc:
        state[f"{k}_errors"] = {"query": f"Not submitted: {exc}"}
        return
    next_form_generation(k)
    state[f"{k}_query"] = ""
    watched = state.setdefault(f"{k}_watched", [])
    # The same click again: the engine gave back the first task, already watched.
    repeated = " The repeated click submitted nothing more." if task_id in watched else ""
    if not repeated:
        watched.insert(0, task_id)
        del watched[20:]
    when_text = (f"to run at {options['run_at']:%Y-%m-%d %H:%M} UTC" if "run_at" in options else
                 f"to run in {options['delay']:g} s" if "delay" in options else "to run now")
    flash(k, "success", f"Submitted task {task_id} {when_text}.{repeated}")


# -- batches -----------------------------------------------------------------------------------
def _batch_text(ctx: ConsoleContext) -> None:
    k = f"{KEY}_batch"
    errors = st.session_state.get(f"{k}_errors", {})
    generation = form_generation(k)
    with st.form(f"{k}_form", border=True):
        st.text_area("Queries (one per line)", key=f"{k}_text", height=180,
                     placeholder="First query\nSecond query\n…")
        _field_error(errors, "queries")
        _common_fields(ctx, k, errors)
        st.form_submit_button("Submit batch", type="primary", key=f"{k}_submit_{generation}",
                              on_click=_submit_batch_text, args=(ctx, k, generation))
    show_flash(k)


def _submit_batch_text(ctx: ConsoleContext, k: str, generation: int) -> None:
    state = st.session_state
    checked = check_batch(state.get(f"{k}_text"), state.get(f"{k}_priority"),
                          state.get(f"{k}_session"), state.get(f"{k}_retries"))
    state[f"{k}_errors"] = checked.errors
    if not checked.ok:
        return
    options = checked.options
    key = submission_key("batch", generation, "\n".join(options["queries"]))
    if _submit_job(k, "queries", lambda: submit_batch(
            ctx.queue, options["queries"], priority=options["priority"],
            session_id=options["session_id"], max_retries=options["max_retries"],
            idempotency_key=key)):
        state[f"{k}_text"] = ""


def _submit_job(k: str, field: str, submit: Callable[[], Any]) -> bool:
    """Run ``submit`` (a batch or CSV job); a rejection is shown under ``field``, an outage
    as a message, and a success is followed and the form made fresh. Whether it went."""
    try:
        job = submit()
    except ValidationError as exc:
        st.session_state[f"{k}_errors"] = {field: str(exc)}
        return False
    except REDIS_DOWN as exc:
        flash(k, "error", f"Not submitted: {exc}")
        return False
    next_form_generation(k)     # fresh, empty inputs: the same click cannot submit twice
    _remember(k, job)
    return True


def _remember(k: str, job: BatchJob) -> None:
    jobs = st.session_state.setdefault(BATCHES, [])
    # The same click again: the engine gave back the first batch, already listed.
    repeated = any(known.batch_id == job.batch_id for known in jobs)
    if not repeated:
        jobs.insert(0, job)
    flash(k, "success", f"Submitted batch {job.batch_id}: {job.total:,} queries. "
                        + ("The repeated click submitted nothing more. " if repeated else "")
                        + "Its progress shows under Batches below.")


# -- CSV -----------------------------------------------------------------------------------------
def _csv(ctx: ConsoleContext) -> None:
    k = f"{KEY}_csv"
    generation = form_generation(k)
    # A new key per generation: after a submit the uploader starts empty, so the same
    # upload cannot be sent twice. The container keeps one key (and CSS class) throughout.
    with st.container(key=f"{k}_file"):
        upload = st.file_uploader("CSV file", type=["csv"], key=f"{k}_file_{generation}",
                                  help="One query per row; the other columns come back in "
                                       "the results file.")
    show_flash(k)
    if upload is None:
        st.caption("Upload a CSV with a column of queries; you choose the column after the preview.")
        return
    data = upload.getvalue()
    try:
        frame = read_csv(data)
    except ValueError as exc:
        st.error(md(f"{upload.name}: {exc}"), icon=":material/front_hand:")
        return
    st.markdown(f"**Preview** of {md(upload.name)}: {len(frame):,} rows, {len(frame.columns)} columns")
    plain_table(f"{k}_preview", frame.head(20))
    columns = list(frame.columns)
    guess = guess_query_column(frame)
    column = st.selectbox("Query column", columns,
                          index=columns.index(guess) if guess in columns else 0, key=f"{k}_column")
    queries, blank = queries_from_column(frame, column)
    problem = describe_blank_rows(blank)
    errors = dict(st.session_state.get(f"{k}_errors", {}))
    if problem:
        errors["column"] = problem
    with st.form(f"{k}_form", border=True):
        st.markdown(f"**{len(queries):,} queries** from column *{md(column)}*")
        _field_error(errors, "column")
        _common_fields(ctx, k, errors)
        key = submission_key("csv", generation, hashlib.sha256(data).hexdigest(), column)
        st.form_submit_button("Submit CSV batch", type="primary", key=f"{k}_submit_{generation}",
                              on_click=_submit_csv, args=(ctx, k, upload.name, data, column, key),
                              disabled=bool(problem))


def _submit_csv(ctx: ConsoleContext, k: str, name: str, data: bytes, column: str,
                key: str) -> None:
    state = st.session_state
    checked = Checked()
    check_common(checked, state.get(f"{k}_priority"), state.get(f"{k}_session"),
                 state.get(f"{k}_retries"))
    state[f"{k}_errors"] = checked.errors
    if not checked.ok:
        return
    _submit_job(k, "column", lambda: submit_csv(
        ctx.queue, data, column, priority=checked.options["priority"],
        session_id=checked.options["session_id"], max_retries=checked.options["max_retries"],
        label=name, idempotency_key=key))


# -- following batches ----------------------------------------------------------------------------
def _watch_batch_by_id(ctx: ConsoleContext) -> None:
    with st.expander("Follow a batch by id"):
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        left.text_input("Batch id", key=f"{KEY}_watch_id", placeholder="the id of a batch_query task")
        right.button("Follow batch", key=f"{KEY}_watch_button", on_click=_follow, args=(ctx,))
        show_flash(f"{KEY}_watch")


def _follow(ctx: ConsoleContext) -> None:
    batch_id = (st.session_state.get(f"{KEY}_watch_id") or "").strip()
    if not batch_id:
        return
    try:
        progress = batch_progress(ctx.queue, batch_id)
    except TaskNotFound:
        flash(f"{KEY}_watch", "warning", f"No batch {batch_id} (wrong id, or it expired).")
        return
    except REDIS_DOWN as exc:
        flash(f"{KEY}_watch", "error", f"Redis did not answer: {exc}")
        return
    jobs = st.session_state.setdefault(BATCHES, [])
    if all(job.batch_id != batch_id for job in jobs):
        jobs.insert(0, BatchJob(batch_id=batch_id, label=f"batch {batch_id[:8]}",
                                total=progress["total"]))


def _batches_body(ctx: ConsoleContext) -> None:
    jobs: list[BatchJob] = st.session_state.get(BATCHES, [])
    if not jobs:
        st.caption("Batches you submit here (or follow by id) show their progress, and their "
                   "results file once done.")
        return
    with redis_guard("the batches"):
        for job in jobs[:MAX_BATCHES_SHOWN]:
            _batch_row(ctx, job)
        updated_caption()


def _batch_row(ctx: ConsoleContext, job: BatchJob) -> None:
    with st.container(border=True, key=f"{KEY}_batch_{job.batch_id}"):
        try:
            progress = batch_progress(ctx.queue, job)
        except TaskNotFound:
            st.warning(md(f"Batch {job.batch_id} ({job.label}) no longer exists."))
            return
        head, link = st.columns([4, 1], vertical_alignment="center")
        head.markdown(f"{md(job.label)} · batch {md(job.batch_id)} · submitted "
                      f"{md(job.created_at)}")
        with link:
            page_link("batches", "Open batch", ":material/stacks:",
                      query_params={"batch": job.batch_id})
        st.progress(progress["fraction"], text=(
            f"{progress['done']:,} of {progress['total']:,} done · {progress['completed']:,} "
            f"completed · {progress['failed']:,} failed · {progress['cancelled']:,} cancelled"))
        if progress["finished"]:
            st.download_button("Download results CSV", data=_results_file(ctx, job, progress),
                               file_name=f"results-{job.batch_id}.csv", mime="text/csv",
                               key=f"{KEY}_download_{job.batch_id}", on_click="ignore",
                               icon=":material/download:")


def _results_file(ctx: ConsoleContext, job: BatchJob, progress: dict) -> bytes:
    # Built once per outcome: a finished batch's results only change if it is retried.
    cache_key = f"{KEY}_results_{job.batch_id}"
    signature = (progress["completed"], progress["failed"], progress["cancelled"])
    cached = st.session_state.get(cache_key)
    if cached is None or cached[0] != signature:
        cached = (signature, results_csv(ctx.queue, job))
        st.session_state[cache_key] = cached
    return cached[1]
