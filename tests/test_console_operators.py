"""The console as operators at work use it: actions that answer, nothing stale, numbers
that agree, batches that open, links that can be shared, values that read well, and
sessions that share their reads. Every page is driven with Streamlit's AppTest against the
session's real Redis (see tests/test_console_pages.py for the rest of the console).
"""
from __future__ import annotations

import re

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from console import shared
from console.testing import (APP, PAGE_FILES, ROOT, button, cards, count_redis_calls, facts_of,
                             panels, plain_texts, select_rows, table, unescape)
from engine import AgentTask, PermanentError, Task, TaskScheduler
from engine.agent import AgentExecutor, DemoBackend

TIMEOUT = 30


@pytest.fixture
def drain(queue, make_worker):
    """Run every due task: agent queries answer at once; ``boom`` fails for good, and so
    does a query containing "fail"."""
    def run() -> dict:
        worker = make_worker(concurrency=1)
        agent = AgentExecutor(queue=queue, backend=DemoBackend(0))

        def boom(task):
            raise PermanentError("model refused: content policy")

        def maybe_fail(task):
            if "fail" in str(task.payload.get("query")):
                raise PermanentError("the query asked to fail")
            return agent.handle(task)
        worker.register_handler("boom", boom)
        worker.register_handler("agent_query", maybe_fail)
        return worker.start(burst=True)
    return run


def page(name: str, **params: str) -> AppTest:
    """A fresh session on page ``name`` opened by a link with ``params``."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if name != "Overview":
        at.run()
        at.switch_page(PAGE_FILES[name])
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def words(at: AppTest) -> str:
    """What the page says, as read: Markdown escapes and emphasis gone, progress bars'
    texts included."""
    bars = [str(p.proto.text) for p in at.get("progress")]
    return (plain_texts(at) + "\n" + "\n".join(bars)).replace("**", "")


def go_back(at: AppTest, **params: str) -> AppTest:
    """The browser's Back: the URL is an older one of this page (only ``params``)."""
    at.query_params.clear()
    at.query_params.update(params)
    return at.run()


def leave_and_return(at: AppTest, name: str) -> AppTest:
    """Open the Overview, then page ``name`` again by the sidebar (a link with no parameters)."""
    at.switch_page(str(APP)).run()
    return at.switch_page(PAGE_FILES[name]).run()


# -- 1. actions answer where the operator is looking ----------------------------------------------
def test_an_action_answers_with_a_toast_and_a_line_that_stays_in_the_detail(console_env, queue,
                                                                            drain):
    task_id = queue.submit_task(AgentTask({"query": "finishes before the click lands"}))
    at = page("Tasks", task=task_id)
    assert not button(at, "Cancel task").disabled          # pending when the page was drawn
    drain()                                                 # ...then it completed
    button(at, "Cancel task").click().run()
    assert queue.get_task(task_id)["status"] == "completed"   # the engine decided
    toasts = [unescape(t.value) for t in at.toast]
    assert any(re.search(rf"Not cancelled: task {task_id} was already completed at "
                         r"\d\d:\d\d:\d\d UTC", t) for t in toasts), toasts
    detail = plain_texts(at)
    assert "was already completed at" in detail
    at.run()                                                # the next live refresh
    assert not at.toast                                     # a toast is shown once...
    assert "was already completed at" in plain_texts(at)    # ...the line in the detail stays
    assert button(at, "Cancel task").disabled


def test_bulk_answers_stay_above_the_table_after_a_refresh(console_env, queue):
    ids = queue.submit_tasks([AgentTask({"query": f"q{i}"}) for i in range(2)])
    at = page("Tasks", status="pending")
    select_rows(at, "tasks", [0, 1])
    button(at, "Cancel selected").click().run()
    assert {queue.get_task(i)["status"] for i in ids} == {"cancelled"}
    assert any("Cancelled 2 tasks" in unescape(t.value) for t in at.toast)
    at.run()
    assert any("Cancelled 2 tasks" in s.value for s in at.success)


# -- 2. nothing stale -------------------------------------------------------------------------------
def test_the_open_detail_and_the_table_stay_live_while_rows_are_selected(console_env, queue,
                                                                         drain):
    ids = queue.submit_tasks([AgentTask({"query": f"q{i}"}) for i in range(2)])
    at = page("Tasks")
    select_rows(at, "tasks", [0])
    opened = at.session_state["tasks_open"]
    assert opened in ids and not button(at, "Cancel task").disabled
    assert "1 selected" in plain_texts(at)
    drain()
    at.run()                                                # a live refresh, the row still ticked
    assert "Live: read" in plain_texts(at)
    assert button(at, "Cancel task").disabled               # it completed: no stale Cancel
    assert "completed" in plain_texts(at)
    # Rows are selected by id: the table shows the finished task, and it stays ticked.
    row = table(at, "tasks_table").set_index("Task id").loc[opened]
    assert row["Status"].endswith("completed")
    assert at.session_state["tasks__selected"] == [opened]


# -- 3. numbers that agree --------------------------------------------------------------------------
def test_every_place_that_counts_agrees_with_redis(console_env, queue, drain):
    """Tasks and batches apart: a running batch is no running task, and its queries are
    tasks. Each number on every page is checked against Redis read here directly."""
    queue.submit_tasks([AgentTask({"query": f"done {i}"}) for i in range(3)]
                       + [Task(task_type="boom", payload={}, max_retries=0)])
    finished_batch = queue.submit_task(Task(task_type="batch_query",
                                            payload={"queries": ["a", "b"]}))
    drain()                       # 3 + 2 completed, 1 failed; one batch completed
    running_batch = queue.submit_task(Task(task_type="batch_query",
                                           payload={"queries": ["c", "d", "e"]}))
    queue.submit_task(AgentTask({"query": "later"}, delay=3600))
    k, client = queue.keys, queue.client
    index = {name: client.zcard(k.status[name]) for name in k.status}
    counters = {n: int(v) for n, v in client.hgetall(k.stats).items()}
    batches = {name: sum(1 for i in client.zrange(k.status[name], 0, -1)
                         if client.hexists(k.task(i), "total")) for name in k.status}
    assert batches["running"] == 1 and batches["completed"] == 1      # the test's own premise
    expected_tasks = {name: index[name] - batches[name] for name in k.status}
    assert expected_tasks["running"] == 0 and expected_tasks["pending"] == 3

    overview = page("Overview")
    main = cards(overview.main)
    sidebar = cards(overview.sidebar)
    for where in (main, sidebar):
        assert where["Pending"] == str(expected_tasks["pending"])
        assert where["Running"] == str(expected_tasks["running"])
        assert where["Completed"] == str(counters["completed"]) == str(expected_tasks["completed"])
        assert where["Failed"] == str(counters["failed"]) == str(expected_tasks["failed"])
    assert sidebar["Batches running"] == str(batches["running"])
    assert main["Dead letters"] == str(expected_tasks["failed"])
    assert main["Scheduled"] == str(index["scheduled"])
    batches_line = words(overview)
    assert f"Running {batches['running']}" in batches_line
    assert f"Completed {batches['completed']}" in batches_line

    for status in ("pending", "running", "completed", "failed", "scheduled"):
        at = page("Tasks", status=status)
        total = index[status]
        if total:
            assert (f"of {total} entries: {expected_tasks[status]} tasks and {batches[status]} "
                    "batches") in words(at), (status, words(at))
            assert len(table(at, "tasks_table")) == total
    failed = page("Failed tasks")
    assert f"{expected_tasks['failed']} failed tasks stored" in plain_texts(failed)
    schedules = page("Schedules")
    assert cards(schedules.main)["Waiting for a due time"] == \
        str(index["scheduled"] + index["retry"])
    view = page("Batches", batch=running_batch)
    assert "0 of 3 queries done" in words(view)
    assert finished_batch in table(view, "batches_table")["Batch id"].tolist()


# -- 4. batches you can open ------------------------------------------------------------------------
def test_a_batch_opens_with_its_queries_failures_retry_and_results(console_env, queue, drain):
    batch_id = queue.submit_task(Task(task_type="batch_query", payload={
        "queries": ["first", "please fail", "third"], "source": "questions.csv"}))
    drain()
    at = page("Batches", batch=batch_id)
    shown = words(at)
    assert f"Batch {batch_id}" in shown and "3 of 3 queries done" in shown
    assert "2 completed · 1 failed" in shown
    children = table(at, "batches_children")
    assert children["Query"].tolist() == ["first", "please fail", "third"]
    assert [s.split()[-1] for s in children["Status"]] == ["completed", "failed", "completed"]
    failures = table(at, "batches_failures")
    assert failures["Query"].tolist() == ["please fail"] and failures["Row"].tolist() == [2]
    assert "asked to fail" in failures["Error"][0]
    assert [b.label for b in at.get("download_button")] == ["Results CSV"]
    button(at, "Retry 1 failed").click().run()
    failed_child = failures["Task id"][0]
    assert queue.get_task(failed_child)["status"] == "pending"
    assert "Retried the batch's failed and cancelled queries" in plain_texts(at)
    # The Tasks table filtered by the batch lists its queries, in input order.
    tasks = page("Tasks", batch=batch_id)
    assert table(tasks, "tasks_table")["Query"].tolist() == ["first", "please fail", "third"]
    assert "of 3 queries of the batch" in words(tasks)


def test_batches_are_reachable_from_submit_tasks_and_events(console_env, queue, drain):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page(PAGE_FILES["Submit"]).run()
    at.text_area(key="submit_batch_text").input("one\ntwo\n")
    button(at, "Submit batch").click().run()
    job = at.session_state["submit_batches"][0]
    assert _links_to(at, "Batches", f"batch={job.batch_id}")
    tasks = page("Tasks", task=job.batch_id)
    assert _links_to(tasks, "Batches", f"batch={job.batch_id}")
    assert _links_to(tasks, "Tasks", f"batch={job.batch_id}")
    drain()
    events = page("Events")
    assert _links_to(events, "Batches", f"batch={job.batch_id}")


def _links_to(at: AppTest, page_stem: str, query: str) -> bool:
    for link in at.get("page_link"):
        proto = link.proto
        if proto.page == page_stem and query in (proto.query_string or ""):
            return True
    return False


# -- 5. links you can share -------------------------------------------------------------------------
def test_filters_page_and_open_task_live_in_the_url(console_env, queue, drain):
    failed = queue.submit_tasks([Task(task_type="boom", payload={"n": i}, max_retries=0)
                                 for i in range(30)])
    drain()
    at = page("Tasks", status="failed", type="boom", range="Last hour", size="25", page="2",
              task=failed[0])
    assert at.selectbox(key="tasks_status").value == "failed"
    assert at.text_input(key="tasks_type").value == "boom"
    assert at.selectbox(key="tasks_range").value == "Last hour"
    assert len(table(at, "tasks_table")) == 5                     # page 2 of 25 + 5
    assert f"Task {failed[0]}" in plain_texts(at)
    # Changing a filter writes the URL, and goes back to page 1.
    at.selectbox(key="tasks_status").set_value("All").run()
    assert "status" not in at.query_params
    assert at.query_params["type"] == "boom" and "page" not in at.query_params
    assert at.query_params["task"] == failed[0]
    # Back: the browser's URL is the old one again.
    go_back(at, status="failed", type="boom", range="Last hour", size="25", page="2",
            task=failed[0])
    assert at.selectbox(key="tasks_status").value == "failed"
    assert len(table(at, "tasks_table")) == 5
    # Leaving the page and coming back by the sidebar (no parameters) keeps the filters.
    leave_and_return(at, "Tasks")
    assert at.selectbox(key="tasks_status").value == "failed"
    assert at.text_input(key="tasks_type").value == "boom"
    assert at.query_params["status"] == "failed"


def test_event_filters_live_in_the_url(console_env, queue, drain):
    done = queue.submit_task(AgentTask({"query": "fine"}))
    failed = queue.submit_task(Task(task_type="boom", payload={}, max_retries=0))
    drain()
    at = page("Events", types="task.failed", keep="1000")
    assert at.multiselect(key="events_types").value == ["task.failed"]
    assert at.selectbox(key="events_keep").value == 1000
    assert table(at, "events_table")["Task id"].tolist() == [failed]
    # Changing a filter writes the URL (the default "keep" is left out).
    at.multiselect(key="events_types").set_value(["task.failed", "task.completed"])
    at.text_input(key="events_text").input(done).run()
    assert at.query_params["types"] == ["task.failed", "task.completed"]   # repeated
    assert at.query_params["q"] == done
    assert set(table(at, "events_table")["Task id"]) == {done}
    # Back: the old URL sets the filters again.
    go_back(at, types="task.failed")
    assert at.multiselect(key="events_types").value == ["task.failed"]
    assert at.text_input(key="events_text").value == ""
    # Leaving and returning by the sidebar (no parameters) keeps them.
    leave_and_return(at, "Events")
    assert at.multiselect(key="events_types").value == ["task.failed"]
    assert at.query_params["types"] == "task.failed"
    # A hand-edited link: a type this console does not know is kept (a newer engine's),
    # a "keep" it does not offer reads as the default.
    odd = page("Events", types="task.custom_thing", keep="7")
    assert odd.multiselect(key="events_types").value == ["task.custom_thing"]
    assert odd.selectbox(key="events_keep").value == 500 and "keep" not in odd.query_params


def test_failed_task_filters_and_open_group_live_in_the_url(console_env, queue, drain):
    queue.submit_tasks([Task(task_type="boom", payload={"n": i}, max_retries=0) for i in range(3)]
                       + [AgentTask({"query": "please fail"}, max_retries=0)])
    drain()
    boom_error = "PermanentError: model refused: content policy"
    at = page("Failed tasks", group=boom_error)
    assert f"Tasks in the error group “{boom_error}”" in words(at)
    assert set(table(at, "failed_tasks_table")["Type"]) == {"boom"}
    # Selecting the other group opens it, in the URL too.
    groups = table(at, "failed_groups_table")
    select_rows(at, "failed_groups", [int(groups.index[groups["Count"] == 1][0])])
    assert at.query_params["group"] == "PermanentError: the query asked to fail"
    assert set(table(at, "failed_tasks_table")["Type"]) == {"agent_query"}
    button(at, "Close the group").click().run()
    assert "group" not in at.query_params
    # A filter narrows both tables and goes in the URL.
    at.text_input(key="failed_type").input("boom").run()
    assert at.query_params["type"] == "boom"
    assert table(at, "failed_groups_table")["Count"].tolist() == [3]
    assert len(table(at, "failed_tasks_table")) == 3
    at.text_input(key="failed_error").input("nothing like this").run()
    assert table(at, "failed_groups_table").empty and table(at, "failed_tasks_table").empty
    # Back, and a return by the sidebar.
    go_back(at, type="boom")
    assert at.text_input(key="failed_error").value == ""
    assert len(table(at, "failed_tasks_table")) == 3
    leave_and_return(at, "Failed tasks")
    assert at.text_input(key="failed_type").value == "boom"
    assert at.query_params["type"] == "boom"


def test_an_open_batch_and_its_query_page_live_in_the_url(console_env, queue, drain):
    batch_id = queue.submit_task(Task(task_type="batch_query", payload={
        "queries": [f"question {i}" for i in range(60)] + ["this one should fail"]}))
    drain()
    at = page("Batches", batch=batch_id, page="2")
    assert len(table(at, "batches_children")) == 11                 # 61 queries, 50 a page
    at.selectbox(key="batches_child_status").set_value("failed").run()
    assert at.query_params["status"] == "failed" and "page" not in at.query_params
    assert table(at, "batches_children")["Query"].tolist() == ["this one should fail"]
    leave_and_return(at, "Batches")
    assert at.query_params["batch"] == batch_id and at.query_params["status"] == "failed"


def test_the_page_of_waiting_tasks_lives_in_the_url(console_env, queue):
    queue.submit_tasks([AgentTask({"query": f"later {i}"}, delay=3600 + i) for i in range(105)])
    at = page("Schedules", page="2")
    assert len(table(at, "schedules_table")) == 5                   # 100 a page
    button(at, "Previous page").click().run()
    assert "page" not in at.query_params and len(table(at, "schedules_table")) == 100
    go_back(at, page="2")
    assert len(table(at, "schedules_table")) == 5


def test_how_far_back_the_audit_reads_lives_in_the_url(console_env, queue):
    from engine.access import Identity, Role, read_audit, write_audit
    for action in ("first", "second", "third"):
        write_audit(queue, Identity("ops@example.com", Role.ADMIN, "local"), action, [], "ok")
    newest, middle, oldest = read_audit(queue)

    def actions(at: AppTest) -> list[str]:
        return at.dataframe[0].value["action"].tolist()
    at = page("Audit", before=middle["id"])
    assert actions(at) == ["first"]
    button(at, "Newest").click().run()
    assert "before" not in at.query_params and actions(at) == ["third", "second", "first"]
    go_back(at, before=newest["id"])
    assert actions(at) == ["second", "first"]
    bad = page("Audit", before="not-an-id")
    assert "is not an audit entry id" in words(bad) and len(actions(bad)) == 3


# -- 6. nothing cut off: text in text elements ------------------------------------------------------
def test_task_details_are_text_not_metric_cards(console_env, queue):
    task_id = queue.submit_task(AgentTask({"query": "long names"}, session_id="session-" + "x" * 60))
    at = page("Tasks", task=task_id)
    assert not [m for m in at.main.metric if m.label in ("Type", "Worker", "Session")]
    facts = facts_of(at)
    assert facts["Type"] == "agent_query" and facts["Session"] == "session-" + "x" * 60
    assert facts["Worker"] == "—"


def test_a_long_answer_opens_in_full_on_the_submit_page(console_env, queue, drain):
    at = page("Submit")
    question = "Explain, at length, " + "why queues need leases " * 20
    at.text_area(key="submit_single_query").input(question)
    button(at, "Submit query").click().run()
    drain()
    at.run()
    [expander] = [e for e in at.expander if e.label.startswith("Answers in full")]
    [answer] = [c.value for c in expander.code]
    assert question.strip() in answer and len(answer) > 400     # the demo agent quotes it


# -- 7. forms that reset, values that read well -----------------------------------------------------
def test_schedule_form_empties_after_adding_and_empty_values_read_well(console_env, queue):
    at = page("Schedules")
    at.text_input(key="recurring_add_name").input("nightly")
    at.text_input(key="recurring_add_cron").input("0 3 * * *")
    at.text_area(key="recurring_add_query").input("nightly report")
    button(at, "Add schedule").click().run()
    assert [s["name"] for s in TaskScheduler(queue).list_schedules()] == ["nightly"]
    assert at.text_input(key="recurring_add_name").value == ""
    assert at.text_input(key="recurring_add_cron").value == ""
    assert at.text_area(key="recurring_add_query").value == ""
    frame = table(at, "recurring_table")
    assert frame["Last run"].tolist() == ["never"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d 03:00:00 UTC", frame["Next run"][0]) or \
        frame["Next run"][0].endswith("UTC")
    tasks = page("Tasks")
    queue.submit_task(AgentTask({"query": "x"}))
    tasks.run()
    frame = table(tasks, "tasks_table")
    assert "Created" in frame.columns and "Created (UTC)" not in frame.columns
    assert re.fullmatch(r"\d\d-\d\d \d\d:\d\d:\d\d", frame["Created"][0])   # short, in a table
    block = next(b for b in panels(tasks, "tasks_table")[0]["blocks"] if b["kind"] == "table")
    created = block["rows"][0][block["columns"].index("Created")]
    # No browser, so the operator's zone is UTC; the hover text gives the whole time.
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC · .* UTC", created["title"])


# -- 8. failures you can produce on purpose ---------------------------------------------------------
def test_readme_console_section_names_the_demo_knobs():
    readme = (ROOT / "README.md").read_text()
    console = readme.split("## Console", 1)[1].split("\n## ", 1)[0]
    for knob in ("AGENT_DEMO_FAILURE_RATE", "AGENT_DEMO_LATENCY", "QUEUE_RETRY_DELAY"):
        assert knob in console


# -- 9. sessions looking at the same thing share one read -------------------------------------------
def test_sessions_on_the_same_page_share_one_read_per_refresh(monkeypatch, redis_url, namespace,
                                                              queue):
    for name in ("CONSOLE_PASSWORD", "REDIS_HOST", "REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("QUEUE_NAMESPACE", namespace)
    monkeypatch.setenv("CONSOLE_REFRESH_SECONDS", "30")     # one tick lasts the whole test
    monkeypatch.setattr("console.shared.ENABLED", True)
    queue.submit_task(AgentTask({"query": "shared"}))
    try:
        first = page("Overview")
        from console.runtime import connect_console
        console_queue = connect_console().queue
        second = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
        with count_redis_calls(console_queue.client) as calls:
            second.run()
        assert not second.exception
        assert cards(second.main)["Pending"] == "1"
        # Only what is not shared: nothing of the Overview's or the sidebar's numbers.
        assert calls.round_trips == 0, calls.names
        # An action from this console starts a new generation: the next read is fresh.
        shared.queue_changed(console_queue)
        with count_redis_calls(console_queue.client) as calls:
            second.run()
        assert calls.round_trips > 0
        del first
    finally:
        st.cache_resource.clear()
        st.cache_data.clear()


@pytest.fixture
def sharing_console(monkeypatch, redis_url, namespace):
    """The app on this test's namespace with sharing on and one tick lasting the test."""
    for name in ("CONSOLE_PASSWORD", "REDIS_HOST", "REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("QUEUE_NAMESPACE", namespace)
    monkeypatch.setenv("CONSOLE_REFRESH_SECONDS", "30")
    monkeypatch.setattr("console.shared.ENABLED", True)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


def test_two_sessions_in_one_tick_build_the_overview_once(monkeypatch, sharing_console, queue):
    from console import widgets
    from console.views import overview
    queue.submit_task(AgentTask({"query": "drawn once"}))
    built = {"overview": 0, "summary": 0}

    def counted(name, original):
        def build(*args):
            built[name] += 1
            return original(*args)
        return build
    monkeypatch.setattr(overview, "overview_panel", counted("overview", overview.overview_panel))
    monkeypatch.setattr(widgets, "summary_panel", counted("summary", widgets.summary_panel))
    first, second = page("Overview"), page("Overview")
    # The second session got the panels the first one's run built: nothing was built again.
    assert built == {"overview": 1, "summary": 1}
    for where in ("main", "sidebar"):
        shown = [cards(getattr(at, where)) for at in (first, second)]
        assert shown[0] == shown[1] and shown[0]["Pending"] == "1"
    figures = [[b for b in panels(at.main)[0]["blocks"] if b["kind"] == "row"] for at in
               (first, second)]
    assert figures[0] == figures[1] and len(figures[0][0]["columns"]) == 2
    # An action from this console starts a new generation: the next tick builds anew.
    from console.runtime import connect_console
    shared.queue_changed(connect_console().queue)
    second.run()
    assert built == {"overview": 2, "summary": 2}


def test_two_sessions_in_one_tick_read_and_build_the_tasks_table_once(monkeypatch,
                                                                      sharing_console, queue):
    from console.views import tasks
    ids = [queue.submit_task(Task(task_type="custom", payload={"query": f"row {n}"}))
           for n in range(3)]
    built = []
    original = tasks._table_panel

    def counted(*args):
        built.append(args[1:])
        return original(*args)
    monkeypatch.setattr(tasks, "_table_panel", counted)
    first = page("Tasks")
    from console.runtime import connect_console
    with count_redis_calls(connect_console().queue.client) as calls:
        second = page("Tasks")
    assert len(built) == 1 and calls.round_trips == 0, calls.names
    shown = [table(at, "tasks_table") for at in (first, second)]
    assert shown[0].equals(shown[1]) and set(shown[1]["Task id"]) == set(ids)
    # A row selected in one session opens that task there, and only there.
    picked = shown[0]["Task id"][0]
    select_rows(first, "tasks", [0])
    second.run()
    assert f"Task {picked}" in [h.value for h in first.subheader]
    assert not [h.value for h in second.subheader if h.value.startswith("Task ")]


def test_the_server_runs_without_a_full_collection_after_every_rerun():
    config = (ROOT / ".streamlit" / "config.toml").read_text()
    assert re.search(r"^postScriptGC\s*=\s*false", config, re.M)
