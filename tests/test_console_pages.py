"""Every console page driven with Streamlit's AppTest against the session's real Redis.

The app finds the test's queue through REDIS_URL and QUEUE_NAMESPACE (read by
``Settings.from_env``); each test then checks what Redis holds through the ``queue``
fixture. AppTest never fires ``run_every``: each ``run()`` is one refresh.
"""
from __future__ import annotations

import io
import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from console.batch_jobs import results_csv
from console.testing import (APP, PAGE_FILES, button, cards, facts_of, panel_table, select_rows,
                             table, texts)
from engine import AgentTask, PermanentError, Task, TaskScheduler
from engine.agent import AgentExecutor, DemoBackend, register_handlers
from tests.support.steps import claim, wait_until

TIMEOUT = 30


@pytest.fixture
def drain(queue, make_worker):
    """Run every due task to the end: agent queries answer at once, ``boom`` fails."""
    def run() -> dict:
        worker = make_worker(concurrency=1)
        register_handlers(worker, queue.settings, AgentExecutor(queue=queue, backend=DemoBackend(0)))

        def boom(task):
            raise PermanentError("model refused: content policy")
        worker.register_handler("boom", boom)
        return worker.start(burst=True)
    return run


def open_app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()


def open_page(name: str) -> AppTest:
    at = open_app()
    at.switch_page(PAGE_FILES[name]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# -- frame and overview -------------------------------------------------------------------
def test_overview_shows_live_numbers_sidebar_and_recent_failures(console_env, queue, drain):
    queue.submit_tasks([AgentTask({"query": f"q{i}"}) for i in range(3)])
    failed_id = queue.submit_task(Task(task_type="boom", payload={}, max_retries=0))
    queue.submit_task(AgentTask({"query": "later"}, delay=3600, priority="urgent"))
    drain()
    queue.submit_task(AgentTask({"query": "waiting"}, priority="high"))

    at = open_app()
    assert not at.exception
    metrics = cards(at.main)
    assert metrics["Completed"] == "3" and metrics["Failed"] == "1"
    assert metrics["Pending"] == "1" and metrics["High"] == "1" and metrics["Scheduled"] == "1"
    assert metrics["Success rate"] == "75%"
    failures = panel_table(at.main, "Task id")
    assert failures["Task id"].tolist() == [failed_id]
    assert "content policy" in failures["Error"][0]
    sidebar = cards(at.sidebar)
    assert sidebar == {"Pending": "1", "Running": "0", "Completed": "3", "Failed": "1",
                       "Workers": "0", "Success rate": "75%", "Batches running": "0"}
    side_text = " ".join(c.value for c in at.sidebar.caption)
    assert "login disabled (set CONSOLE_PASSWORD)" in side_text
    assert queue.namespace in side_text
    assert [s.value for s in at.sidebar.success][0].startswith("Connected to")


@pytest.mark.parametrize("name", list(PAGE_FILES))
def test_every_page_draws_the_frame_and_its_title(console_env, name):
    at = open_page(name)
    assert [t.value for t in at.title] == [name]
    assert set(cards(at.sidebar)) >= {"Pending", "Completed", "Success rate"}


# -- submit --------------------------------------------------------------------------------
def test_submit_single_query_now(console_env, queue):
    at = open_page("Submit")
    at.text_area(key="submit_single_query").input("Summarise the report")
    at.selectbox(key="submit_single_priority").set_value("high")
    at.text_input(key="submit_single_session").input("sess-42")
    at.number_input(key="submit_single_retries").set_value(2)
    button(at, "Submit query").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    task_id = at.session_state["submit_single_watched"][0]
    assert any(task_id in s.value for s in at.success)
    record = queue.get_task(task_id)
    assert record["status"] == "pending" and record["priority"] == "high"
    assert record["task_type"] == "agent_query" and record["session_id"] == "sess-42"
    assert record["payload"]["query"] == "Summarise the report" and record["max_retries"] == 2
    watch = table(at, "submit_single_watch_table")
    assert watch["Task id"].tolist() == [task_id]


def test_submit_single_invalid_input_is_explained_and_nothing_is_sent(console_env, queue):
    at = open_page("Submit")
    at.text_input(key="submit_single_session").input("bad\x01id")
    button(at, "Submit query").click().run()
    errors = [e.value for e in at.error]
    assert "Enter a query." in errors
    assert any("control characters" in e for e in errors)
    assert queue.get_queue_stats().submitted_tasks == 0


def test_submit_single_after_a_delay_is_scheduled(console_env, queue):
    at = open_page("Submit")
    at.radio(key="submit_single_when").set_value("After a delay").run()
    at.text_area(key="submit_single_query").input("later please")
    at.number_input(key="submit_single_delay").set_value(120)
    button(at, "Submit query").click().run()
    assert not at.error, [e.value for e in at.error]
    record = queue.get_task(at.session_state["submit_single_watched"][0])
    assert record["status"] == "scheduled"
    due = datetime.fromisoformat(record["due_at"])
    assert timedelta(seconds=100) < due - datetime.now(timezone.utc) < timedelta(seconds=140)


def test_submit_single_at_a_time_rejects_the_past_then_schedules(console_env, queue):
    at = open_page("Submit")
    at.radio(key="submit_single_when").set_value("At a time").run()
    at.text_area(key="submit_single_query").input("at nine")
    past = (datetime.now(timezone.utc) - timedelta(hours=1)).replace(tzinfo=None, microsecond=0)
    at.datetime_input(key="submit_single_run_at").set_value(past)
    button(at, "Submit query").click().run()
    assert any("has passed" in e.value for e in at.error)
    assert queue.get_queue_stats().submitted_tasks == 0
    future = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(tzinfo=None, second=0,
                                                                       microsecond=0)
    at.datetime_input(key="submit_single_run_at").set_value(future)
    button(at, "Submit query").click().run()
    assert not at.error, [e.value for e in at.error]
    record = queue.get_task(at.session_state["submit_single_watched"][0])
    assert record["status"] == "scheduled"
    assert datetime.fromisoformat(record["due_at"]) == future.replace(tzinfo=timezone.utc)


def test_submit_batch_of_lines_then_watch_it_finish_and_download(console_env, queue, drain):
    at = open_page("Submit")
    at.text_area(key="submit_batch_text").input("first\n\n  second  \nthird\n")
    at.selectbox(key="submit_batch_priority").set_value("low")
    button(at, "Submit batch").click().run()
    assert not at.error, [e.value for e in at.error]
    job = at.session_state["submit_batches"][0]
    parent = queue.get_task(job.batch_id)
    assert parent["task_type"] == "batch_query" and parent["priority"] == "low"
    children = queue.search_tasks(status="pending", limit=10)["tasks"]
    assert sorted(c["payload"]["query"] for c in children) == ["first", "second", "third"]
    assert not any(b.label == "Download results CSV" for b in at.get("download_button"))
    drain()
    at.run()
    assert "3 of 3 done" in texts(at) or any("3 of 3 done" in (p.proto.text or "")
                                             for p in at.get("progress"))
    assert [b.label for b in at.get("download_button")] == ["Download results CSV"]


def test_submit_batch_with_no_queries_explains_and_sends_nothing(console_env, queue):
    at = open_page("Submit")
    at.text_area(key="submit_batch_text").input("\n   \n")
    button(at, "Submit batch").click().run()
    assert any("at least one query" in e.value for e in at.error)
    assert queue.get_queue_stats().submitted_tasks == 0


CSV = b"id,prompt,owner\n1,What is Redis?,ann\n2,What is a queue?,bob\n"
CSV_UPLOADER = "submit_csv_file_0"      # the uploader's key until a CSV is submitted


def test_csv_upload_preview_column_choice_submit_and_results(console_env, queue, drain):
    at = open_page("Submit")
    at.file_uploader(key=CSV_UPLOADER).set_value(("questions.csv", CSV, "text/csv")).run()
    assert not at.error, [e.value for e in at.error]
    preview = table(at, "submit_csv_preview")
    assert preview.columns.tolist() == ["id", "prompt", "owner"] and len(preview) == 2
    assert at.selectbox(key="submit_csv_column").value == "prompt"   # guessed from the name
    button(at, "Submit CSV batch").click().run()
    assert not at.error, [e.value for e in at.error]
    job = at.session_state["submit_batches"][0]
    children = queue.search_tasks(status="pending", limit=10)["tasks"]
    assert sorted(c["payload"]["query"] for c in children) == ["What is Redis?", "What is a queue?"]
    drain()
    at.run()
    assert [b.label for b in at.get("download_button")] == ["Download results CSV"]
    results = pd.read_csv(io.BytesIO(results_csv(queue, job)), encoding="utf-8-sig")
    assert results["prompt"].tolist() == ["What is Redis?", "What is a queue?"]
    assert results["owner"].tolist() == ["ann", "bob"]
    assert set(results["status"]) == {"completed"}
    assert results["answer"].str.contains("demo agent").all()


def test_csv_upload_with_blank_queries_cannot_be_submitted(console_env, queue):
    at = open_page("Submit")
    at.file_uploader(key=CSV_UPLOADER).set_value(
        ("q.csv", b"query,x\nhello,1\n,2\n", "text/csv")).run()
    assert any("no query (data row 2)" in e.value for e in at.error)
    assert button(at, "Submit CSV batch").disabled
    at.file_uploader(key=CSV_UPLOADER).set_value(("bad.csv", b"", "text/csv")).run()
    assert any("empty" in e.value for e in at.error)
    assert queue.get_queue_stats().submitted_tasks == 0


# -- each form submits once ---------------------------------------------------------------------
def count_tasks(queue, task_type: str) -> int:
    """Tasks of ``task_type`` stored in this test's namespace (batch parents or queries)."""
    return queue.search_tasks(task_type=task_type, limit=100)["total"]


def double_click(at: AppTest, label: str, between=None) -> AppTest:
    """Click ``label`` twice, as a double click reaches the server: the second click
    carries the same widget states as the first (the page the browser still showed: same
    button, same form content) and arrives after the first was handled. ``between(at)``
    runs in between. (AppTest re-reads a stale page's widgets from the session, so the
    states are kept and sent again through its ``_run``.)"""
    clicked = button(at, label).click()
    states = clicked.root.get_widget_states()
    clicked.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    if between is not None:
        between(at)
    return at._run(states)


def test_a_double_click_on_submit_csv_batch_submits_one_batch(console_env, queue):
    at = open_page("Submit")
    at.file_uploader(key=CSV_UPLOADER).set_value(("questions.csv", CSV, "text/csv")).run()
    double_click(at, "Submit CSV batch")
    assert not at.exception, [e.value for e in at.exception]
    assert count_tasks(queue, "batch_query") == 1 and count_tasks(queue, "agent_query") == 2
    assert len(at.session_state["submit_batches"]) == 1
    # The uploader was replaced by an empty one: nothing left to submit again.
    [uploader] = at.file_uploader
    assert uploader.key != CSV_UPLOADER and not any(b.label == "Submit CSV batch" for b in at.button)
    # Uploading the same file again is a new batch, on purpose.
    uploader.set_value(("questions.csv", CSV, "text/csv")).run()
    button(at, "Submit CSV batch").click().run()
    assert count_tasks(queue, "batch_query") == 2 and len(at.session_state["submit_batches"]) == 2


def test_a_double_click_on_submit_batch_submits_one_batch(console_env, queue):
    at = open_page("Submit")
    at.text_area(key="submit_batch_text").input("one\ntwo\n")

    def emptied(at):
        assert at.text_area(key="submit_batch_text").value == ""

    double_click(at, "Submit batch", between=emptied)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert count_tasks(queue, "batch_query") == 1 and count_tasks(queue, "agent_query") == 2
    assert len(at.session_state["submit_batches"]) == 1
    # The same text typed into the emptied form and sent is a new batch, on purpose.
    at.text_area(key="submit_batch_text").input("one\ntwo\n")
    button(at, "Submit batch").click().run()
    assert count_tasks(queue, "batch_query") == 2


def test_a_double_click_on_submit_query_submits_one_task(console_env, queue):
    at = open_page("Submit")
    at.text_area(key="submit_single_query").input("Only once, please")
    double_click(at, "Submit query")
    assert not at.exception, [e.value for e in at.exception]
    assert count_tasks(queue, "agent_query") == 1
    assert len(at.session_state["submit_single_watched"]) == 1


# -- tasks ---------------------------------------------------------------------------------
@pytest.fixture
def mixed_tasks(queue, drain):
    """Tasks of every kind: done, failed, pending at several priorities, scheduled."""
    done = queue.submit_tasks([AgentTask({"query": f"done {i}"}) for i in range(3)])
    failed = queue.submit_task(Task(task_type="boom", payload={"query": "explode"}, max_retries=0))
    drain()
    pending = queue.submit_tasks(
        [AgentTask({"query": f"alpha {i}"}, priority="urgent", session_id="s-1") for i in range(2)]
        + [AgentTask({"query": f"beta {i}"}, priority="low") for i in range(3)])
    later = queue.submit_task(AgentTask({"query": "gamma later"}, delay=3600))
    return {"done": done, "failed": failed, "urgent": pending[:2], "low": pending[2:],
            "later": later}


def test_tasks_table_filters_by_status_priority_type_session_time_and_search(console_env, queue,
                                                                              mixed_tasks):
    at = open_page("Tasks")
    assert len(table(at, "tasks_table")) == 10
    at.selectbox(key="tasks_status").set_value("pending").run()
    assert set(table(at, "tasks_table")["Task id"]) == set(mixed_tasks["urgent"] + mixed_tasks["low"])
    at.selectbox(key="tasks_priority").set_value("urgent").run()
    assert set(table(at, "tasks_table")["Task id"]) == set(mixed_tasks["urgent"])
    at.selectbox(key="tasks_priority").set_value("All")
    at.selectbox(key="tasks_status").set_value("All").run()
    at.text_input(key="tasks_type").input("boom").run()
    assert table(at, "tasks_table")["Task id"].tolist() == [mixed_tasks["failed"]]
    at.text_input(key="tasks_type").input("")
    at.text_input(key="tasks_session").input("s-1").run()
    assert set(table(at, "tasks_table")["Task id"]) == set(mixed_tasks["urgent"])
    at.text_input(key="tasks_session").input("")
    at.text_input(key="tasks_search").input("BETA").run()
    assert set(table(at, "tasks_table")["Task id"]) == set(mixed_tasks["low"])
    at.text_input(key="tasks_search").input(mixed_tasks["later"]).run()   # an exact id
    assert table(at, "tasks_table")["Task id"].tolist() == [mixed_tasks["later"]]
    assert at.session_state["tasks_open"] == mixed_tasks["later"]
    at.text_input(key="tasks_search").input("")
    at.selectbox(key="tasks_range").set_value("Last 15 minutes").run()
    assert len(table(at, "tasks_table")) == 10
    assert "Showing **1–10** of **10** entries" in texts(at)


def test_tasks_table_pages_on_the_server(console_env, queue):
    ids = queue.submit_tasks([AgentTask({"query": f"task {i:02d}"}) for i in range(60)])
    at = open_page("Tasks")
    at.selectbox(key="tasks_page_size").set_value(25).run()
    first = table(at, "tasks_table")["Task id"].tolist()
    assert len(first) == 25 and "Page 1 of 3" in texts(at)
    button(at, "Next page").click().run()
    second = table(at, "tasks_table")["Task id"].tolist()
    assert len(second) == 25 and not set(first) & set(second)
    button(at, "Next page").click().run()
    third = table(at, "tasks_table")["Task id"].tolist()
    assert len(third) == 10 and set(first) | set(second) | set(third) == set(ids)
    assert button(at, "Next page").disabled
    button(at, "Previous page").click().run()
    assert table(at, "tasks_table")["Task id"].tolist() == second


def open_task(at: AppTest, task_id: str) -> AppTest:
    at.text_input(key="tasks_open_input").input(task_id)
    return button(at, "Open task").click().run()


def test_task_detail_shows_payload_result_error_timeline(console_env, queue, mixed_tasks):
    at = open_page("Tasks")
    open_task(at, mixed_tasks["failed"])
    assert f"Task {mixed_tasks['failed']}" in [s.value for s in at.subheader]
    facts = facts_of(at)
    assert facts["Type"] == "boom" and facts["Attempts"] == "1 of 1"
    assert any("content policy" in c.value for c in at.code)
    assert any({"query": "explode"} == j.value or "explode" in str(j.value) for j in at.json)
    timeline = table(at, "tasks_timeline")
    assert {"task.submitted", "task.failed"} <= set(timeline["What"])
    assert not button(at, "Retry task").disabled and button(at, "Cancel task").disabled
    open_task(at, mixed_tasks["done"][0])
    assert any("demo agent" in str(j.value) for j in at.json)     # the result
    assert any("Why: completed" in c.value for c in at.caption)


def test_task_detail_says_why_a_task_ended_and_who_cancelled_it(console_env, queue, mixed_tasks):
    at = open_page("Tasks")
    open_task(at, mixed_tasks["failed"])
    assert any("Why: error" in c.value for c in at.caption)
    task_id = mixed_tasks["low"][0]
    queue.cancel_task(task_id, reason="duplicate of an earlier query", by="ops@example.com")
    open_task(at, task_id)
    shown = [c.value.replace("\u2060", "") for c in at.caption]   # md() keeps @ from linking
    assert any("Why: cancelled" in c and
               "Cancelled by ops@example.com: duplicate of an earlier query" in c for c in shown)


def test_task_actions_cancel_retry_requeue_delete(console_env, queue, mixed_tasks):
    at = open_page("Tasks")
    task_id = mixed_tasks["low"][0]
    open_task(at, task_id)
    button(at, "Cancel task").click().run()
    assert queue.get_task(task_id)["status"] == "cancelled"
    assert any("Cancelled 1 task" in s.value for s in at.success)
    button(at, "Retry task").click().run()
    assert queue.get_task(task_id)["status"] == "pending"
    later = mixed_tasks["later"]
    open_task(at, later)
    at.selectbox(key="tasks_detail_priority").set_value("urgent")
    button(at, "Requeue task").click().run()
    record = queue.get_task(later)
    assert record["status"] == "pending" and record["priority"] == "urgent"
    button(at, "Delete task").click().run()
    assert queue.get_task(later) is None
    assert "tasks_open" not in at.session_state


def test_task_link_with_query_param_opens_it(console_env, queue, mixed_tasks):
    at = open_app()
    at.switch_page(PAGE_FILES["Tasks"])
    at.query_params["task"] = mixed_tasks["failed"]
    at.run()
    assert f"Task {mixed_tasks['failed']}" in [s.value for s in at.subheader]


def test_bulk_actions_on_selected_rows(console_env, queue, mixed_tasks):
    at = open_page("Tasks")
    at.selectbox(key="tasks_status").set_value("pending").run()
    shown = table(at, "tasks_table")["Task id"].tolist()
    select_rows(at, "tasks", [0, 1])
    assert "2 selected" in texts(at)
    button(at, "Cancel selected").click().run()
    assert [queue.get_task(t)["status"] for t in shown[:2]] == ["cancelled", "cancelled"]
    assert {queue.get_task(t)["status"] for t in shown[2:]} == {"pending"}
    assert any("Cancelled 2 tasks" in s.value for s in at.success)
    # Retrying a mix skips what cannot be retried, and says so.
    at.selectbox(key="tasks_status").set_value("All").run()
    frame = table(at, "tasks_table")
    rows = [int(frame.index[frame["Task id"] == t][0]) for t in shown[:3]]
    select_rows(at, "tasks", rows)
    button(at, "Retry selected").click().run()
    assert [queue.get_task(t)["status"] for t in shown[:3]] == ["pending"] * 3
    assert any("Retried 2 tasks. Skipped 1" in w.value for w in at.warning)


def test_bulk_action_on_everything_matching_the_filters(console_env, queue, mixed_tasks):
    at = open_page("Tasks")
    at.text_input(key="tasks_session").input("s-1").run()
    assert button(at, "Apply to all matching").disabled
    at.selectbox(key="tasks_bulk_action").set_value("delete")
    at.checkbox(key="tasks_bulk_confirm").check().run()
    button(at, "Apply to all matching").click().run()
    assert all(queue.get_task(t) is None for t in mixed_tasks["urgent"])
    assert all(queue.get_task(t) is not None for t in mixed_tasks["low"])
    assert any("Deleted 2 tasks" in s.value for s in at.success)
    assert at.checkbox(key="tasks_bulk_confirm").value is False


# -- workers -------------------------------------------------------------------------------
def test_workers_page_lists_running_and_stopped_workers(console_env, queue, make_worker, drain):
    queue.submit_tasks([AgentTask({"query": "x"}) for _ in range(2)])
    drain()                                 # a burst worker that ran and stopped cleanly
    worker = make_worker(concurrency=2, name="steady")
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    try:
        wait_until(lambda: any(w["worker_id"] == worker.worker_id for w in queue.list_workers()),
                   what="the worker to register")
        at = open_page("Workers")
        workers = table(at, "workers_table")
        row = workers[workers["Worker id"] == worker.worker_id].iloc[0]
        assert row["Name"] == "steady" and row["State"] == "● running"
        assert row["Concurrency"] == 2 and row["Heartbeat age"].endswith("ago")
        assert (workers["State"] == "● stopped").sum() == 1
        metrics = cards(at.main)
        assert metrics["Running"] == "1" and metrics["Stopped"] == "1"
    finally:
        worker.stop()
        thread.join(10)


def test_lost_worker_is_shown_with_what_happened_to_its_tasks(console_env, queue):
    task_id = queue.submit_task(AgentTask({"query": "held when the worker died"}))
    fields = {"name": "doomed", "host": "box-1", "pid": 4242, "state": "running",
              "concurrency": 1, "in_hand": 1, "processed": 0, "failed": 0, "retried": 0,
              "lost": 0, "started_at": 1, "handlers": "agent_query"}
    [(claimed, token)] = claim(queue, "worker-doomed01")
    assert claimed == task_id
    queue.store.heartbeat("worker-doomed01", {**fields, "current": json.dumps([task_id])},
                          [(task_id, token)])
    time.sleep(1.2)                         # past the 1 s lease: silent, hence lost
    at = open_page("Workers")
    lost = table(at, "workers_table")
    assert lost[lost["Worker id"] == "worker-doomed01"]["State"].tolist() == ["● lost"]
    assert queue.reap_expired_leases() == (1, 0)    # what any live worker's heartbeat does
    at.run()
    stories = [e.label for e in at.expander if "doomed" in e.label]
    assert stories and "box-1" in stories[0] and "4242" in stories[0]
    story = table(at, "workers_lost_worker-doomed01")
    assert story["Task id"].tolist() == [task_id]
    assert story["What happened"].tolist() == ["lease expired: put back in line"]
    assert story["Status now"].tolist() == ["● pending"]


# -- schedules -------------------------------------------------------------------------------
def test_schedules_page_runs_now_cancels_and_deletes(console_env, queue):
    ids = [queue.submit_task(AgentTask({"query": f"in {m} min"}, delay=m * 60)) for m in (30, 10, 20)]
    at = open_page("Schedules")
    frame = table(at, "schedules_table")
    assert frame["Task id"].tolist() == [ids[1], ids[2], ids[0]]      # soonest first
    assert frame["Due in"].tolist()[0].endswith("min")
    assert cards(at.main)["Waiting for a due time"] == "3"
    select_rows(at, "schedules", [0])
    button(at, "Run selected now").click().run()
    assert queue.get_task(ids[1])["status"] == "pending"
    select_rows(at, "schedules", [0])
    button(at, "Cancel selected").click().run()
    assert queue.get_task(ids[2])["status"] == "cancelled"
    select_rows(at, "schedules", [0])
    button(at, "Delete selected").click().run()
    assert queue.get_task(ids[0]) is None
    assert table(at, "schedules_table").empty


def test_recurring_schedules_add_pause_and_remove(console_env, queue):
    scheduler = TaskScheduler(queue)
    at = open_page("Schedules")
    at.text_input(key="recurring_add_name").input("every-quarter")
    at.text_input(key="recurring_add_cron").input("*/15 * * * *")
    at.text_area(key="recurring_add_query").input("quarterly check")
    button(at, "Add schedule").click().run()
    assert not at.error, [e.value for e in at.error]
    assert [s["name"] for s in scheduler.list_schedules()] == ["every-quarter"]
    frame = table(at, "recurring_table")
    assert frame["Name"].tolist() == ["every-quarter"] and frame["Cron"].tolist() == ["*/15 * * * *"]
    select_rows(at, "recurring", [0])
    button(at, "Pause schedule").click().run()
    assert scheduler.list_schedules()[0]["paused"] is True
    select_rows(at, "recurring", [0])
    button(at, "Remove schedule").click().run()
    assert scheduler.list_schedules() == []


# -- dead letters ------------------------------------------------------------------------------
@pytest.fixture
def dead_letters(queue, drain):
    ids = queue.submit_tasks([Task(task_type="boom", payload={"n": i}, max_retries=0) for i in range(3)]
                             + [Task(task_type="nobody-handles-this", payload={}, max_retries=0)])
    drain()
    return {"boom": ids[:3], "orphan": ids[3]}


def test_failed_tasks_grouped_by_error_retry_group_and_selected(console_env, queue, dead_letters):
    at = open_page("Failed tasks")
    groups = table(at, "failed_groups_table")
    assert groups["Count"].tolist() == [3, 1]
    assert "content policy" in groups["Error"][0] and "nobody-handles-this" in groups["Error"][1]
    assert len(table(at, "failed_tasks_table")) == 4
    select_rows(at, "failed_groups", [1])
    assert table(at, "failed_tasks_table")["Task id"].tolist() == [dead_letters["orphan"]]
    button(at, "Retry group").click().run()
    assert queue.get_task(dead_letters["orphan"])["status"] == "pending"
    frame = table(at, "failed_tasks_table")
    select_rows(at, "failed_tasks", [int(frame.index[frame["Task id"] == dead_letters["boom"][0]][0])])
    button(at, "Retry selected").click().run()
    assert queue.get_task(dead_letters["boom"][0])["status"] == "pending"
    assert {queue.get_task(t)["status"] for t in dead_letters["boom"][1:]} == {"failed"}


def test_retry_all_and_purge_need_confirmation(console_env, queue, dead_letters, drain):
    at = open_page("Failed tasks")
    assert button(at, "Retry all failed").disabled and button(at, "Purge failed").disabled
    at.checkbox(key="failed_confirm").check().run()
    button(at, "Retry all failed").click().run()
    assert queue.count_tasks("failed") == 0
    assert any("Retried 4 tasks" in s.value for s in at.success)
    drain()                                 # they fail again
    assert queue.count_tasks("failed") == 4
    at.checkbox(key="failed_confirm").check().run()
    button(at, "Purge failed").click().run()
    assert queue.count_tasks("failed") == 0
    assert all(queue.get_task(t) is None for t in dead_letters["boom"])


# -- events --------------------------------------------------------------------------------------
def test_events_page_catches_up_from_the_log_and_filters(console_env, queue, drain):
    first = queue.submit_task(AgentTask({"query": "one"}))
    at = open_page("Events")
    frame = table(at, "events_table")
    assert frame["Event"].tolist() == ["task.submitted"] and frame["Task id"][0] == first
    second = queue.submit_task(Task(task_type="boom", payload={}, max_retries=0))
    drain()
    at.run()                                # one live refresh: reads only what is new
    events = table(at, "events_table")
    assert {"task.completed", "task.failed", "worker.started", "worker.stopped"} <= set(events["Event"])
    at.multiselect(key="events_types").set_value(["task.failed"]).run()
    assert table(at, "events_table")["Task id"].tolist() == [second]
    at.multiselect(key="events_types").set_value([])
    at.text_input(key="events_text").input(first).run()
    assert set(table(at, "events_table")["Task id"]) == {first}
    # A reload is a new session: it catches up from the stored log.
    again = open_page("Events")
    assert {"task.submitted", "task.completed", "task.failed"} <= set(table(again, "events_table")["Event"])
