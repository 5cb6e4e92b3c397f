"""The console's modules without Streamlit, and the engine reads added for it."""
from __future__ import annotations

import io
import string
from datetime import datetime, timezone

import pandas as pd
import pytest

from console import actions, batch_jobs, charts, data, forms, theme
from console.connection import configured_redis_url
from engine import AgentTask, PermanentError, Settings, Task, ValidationError
from engine.agent import AgentExecutor, DemoBackend, register_handlers


@pytest.fixture
def run_all(queue, make_worker):
    """Drain the queue: agent queries answer at once, ``boom`` tasks fail."""
    def run():
        worker = make_worker()
        register_handlers(worker, queue.settings, AgentExecutor(queue=queue, backend=DemoBackend(0)))
        worker.register_handler("boom", lambda task: (_ for _ in ()).throw(PermanentError(
            task.payload.get("why", "it broke"))))
        return worker.start(burst=True)
    return run


# -- engine reads ---------------------------------------------------------------------------
def test_search_tasks_pages_filters_and_counts(queue, run_all):
    done = queue.submit_tasks([AgentTask({"query": f"Done {i}"}) for i in range(3)])
    run_all()
    pending = queue.submit_tasks([AgentTask({"query": f"Wait {i}"}, priority="high", session_id="s")
                                  for i in range(4)])
    everything = queue.search_tasks(limit=50)
    assert everything["total"] == 7 and everything["exact"]
    # Newest change first (tasks changed in the same millisecond tie, in id order).
    assert {t["task_id"] for t in everything["tasks"][:4]} == set(pending)
    stamps = [t["updated_at"] for t in everything["tasks"]]
    assert stamps == sorted(stamps, reverse=True)
    first, rest = (queue.search_tasks(status="pending", limit=3, offset=o) for o in (0, 3))
    assert len(first["tasks"]) == 3 and len(rest["tasks"]) == 1 and rest["total"] == 4
    assert {t["task_id"] for t in first["tasks"] + rest["tasks"]} == set(pending)
    merged_page = queue.search_tasks(limit=3, offset=4)
    assert {t["task_id"] for t in merged_page["tasks"]} == set(done)
    assert queue.search_tasks(status=["completed", "failed"])["total"] == 3
    assert {t["task_id"] for t in queue.search_tasks(priority="high")["tasks"]} == set(pending)
    assert queue.search_tasks(session_id="s", task_type="agent_query")["total"] == 4
    assert [t["task_id"] for t in queue.search_tasks(text="done 1")["tasks"]] == [done[1]]
    assert [t["task_id"] for t in queue.search_tasks(text=pending[2][:12])["tasks"]] == [pending[2]]
    future = queue.search_tasks(since_ms=int(datetime.now(timezone.utc).timestamp() * 1000) + 60_000)
    assert future["total"] == 0 and future["tasks"] == []
    scanned = queue.search_tasks(text="wait", scan_limit=2)
    assert scanned["exact"] is False and scanned["scanned"] == 2
    with pytest.raises(ValidationError, match="one status"):
        queue.search_tasks(limit=50, offset=10_000)
    assert queue.search_tasks(status="pending", limit=50, offset=10_000)["tasks"] == []


def test_get_task_statuses_keeps_order_and_marks_unknown_ids(queue):
    a, b = queue.submit_tasks([AgentTask({"query": "a"}), AgentTask({"query": "b"}, delay=60)])
    statuses = queue.get_task_statuses([b, "nope", a])
    assert [s and s["status"] for s in statuses] == ["scheduled", None, "pending"]
    assert statuses[0]["task_id"] == b
    assert queue.get_task_statuses([]) == []


def test_list_scheduled_is_soonest_first_with_due_times(queue):
    ids = [queue.submit_task(AgentTask({"query": str(m)}, delay=m * 60)) for m in (5, 1, 3)]
    queue.submit_task(AgentTask({"query": "now"}))
    rows = queue.list_scheduled(limit=10)
    assert [r["task_id"] for r in rows] == [ids[1], ids[2], ids[0]]
    due = [datetime.fromisoformat(r["due_at"]) for r in rows]
    assert due == sorted(due) and due[0] > datetime.now(timezone.utc)
    assert [r["task_id"] for r in queue.list_scheduled(limit=1, offset=2)] == [ids[0]]


def test_failed_task_groups_group_by_first_line_of_the_error(queue, run_all):
    queue.submit_tasks([Task(task_type="boom", payload={"why": "quota exceeded\ndetails"},
                             max_retries=0) for _ in range(3)]
                       + [Task(task_type="boom", payload={"why": "bad input"}, max_retries=0)])
    run_all()
    groups = queue.failed_task_groups()
    assert [(g["count"], g["error"]) for g in groups] == [
        (3, "PermanentError: quota exceeded"), (1, "PermanentError: bad input")]
    assert groups[0]["task_types"] == ["boom"] and len(groups[0]["task_ids"]) == 3
    assert groups[0]["first_failed_at"] <= groups[0]["last_failed_at"]
    assert len(queue.failed_task_groups(scan_limit=1)) == 1


def test_get_workers_reads_workers_that_left_the_registry(queue, run_all):
    stats = run_all()
    stopped = [e["data"]["worker_id"] for e in queue.read_events(count=100)
               if e["type"] == "worker.stopped"]
    assert stopped and queue.list_workers() == []
    [info] = queue.get_workers(stopped + ["worker-unknown"])
    assert info["state"] == "stopped" and info["worker_id"] == stopped[0]
    assert int(info["processed"]) == stats["processed"]
    assert datetime.fromisoformat(info["last_heartbeat"]).tzinfo is not None


# -- console/data.py --------------------------------------------------------------------------
def test_task_page_and_frame(queue):
    ids = queue.submit_tasks([AgentTask({"query": "x" * 300}, session_id="s1")]
                             + [AgentTask({"query": f"q{i}"}) for i in range(5)])
    page = data.load_task_page(queue, data.TaskFilters(), page=1, page_size=2)
    assert page.total == 6 and page.pages == 3 and page.first_row == 3 and len(page.ids) == 2
    exact = data.load_task_page(queue, data.TaskFilters(search=ids[0]))
    assert exact.exact_id == ids[0] and exact.ids == [ids[0]]
    frame = data.tasks_frame(exact.records)
    assert frame.columns.tolist() == data.TASK_COLUMNS
    row = frame.iloc[0]
    assert row["Status"] == "● pending" and row["Session"] == "s1" and row["Attempts"] == "0 / 4"
    assert len(row["Query"]) == data.QUERY_PREVIEW_CHARS and row["Query"].endswith("…")
    deep = data.load_task_page(queue, data.TaskFilters(), page=10_000, page_size=50)
    assert deep.page == 199                 # clamped to the deepest reachable page


def test_task_timeline_merges_record_times_and_events(queue, run_all):
    task_id = queue.submit_task(AgentTask({"query": "trace me"}))
    run_all()
    timeline = data.task_timeline(queue, queue.get_task(task_id))
    assert timeline["What"].tolist()[0] in ("created", "task.submitted")
    assert {"task.submitted", "task.status_changed", "task.completed", "finished"} <= set(timeline["What"])
    assert timeline["Time (UTC)"].is_monotonic_increasing


def test_allowed_actions_follow_the_engine_rules():
    assert data.allowed_actions("pending") == {"cancel", "requeue", "delete"}
    assert data.allowed_actions("failed") == {"retry", "delete"}
    assert data.allowed_actions("completed") == {"delete"}
    assert data.allowed_actions("running", is_batch=True) == {"cancel", "retry", "delete"}


def test_events_filter_and_frame():
    events = [{"id": "1-0", "type": "task.submitted", "data": {"task_id": "abc", "status": "pending", "ts": 1000}},
              {"id": "2-0", "type": "worker.lost", "data": {"worker_id": "worker-1", "ts": 2000}},
              {"id": "3-0", "type": "schedule.fired", "data": {"name": "nightly"}}]
    assert len(data.filter_events(events, [])) == 3                     # unknown types kept
    assert [e["id"] for e in data.filter_events(events, ["worker.lost"])] == ["2-0"]
    assert [e["id"] for e in data.filter_events(events, None, "ABC")] == ["1-0"]
    frame = data.events_frame(events)
    assert frame["Event id"].tolist() == ["3-0", "2-0", "1-0"]           # newest first
    assert frame["Worker"][1] == "worker-1" and frame["Time (UTC)"][2].value // 10**6 == 1000


def test_describe_age_and_query_preview():
    assert [data.describe_age(s) for s in (None, 3, 90, 7200, 86400 * 12)] == [
        "—", "3 s", "1.5 min", "2.0 h", "12 d"]
    assert data.query_preview({"count": 4, "source": "x"}) == "batch of 4 queries"
    assert data.query_preview({"a": 1}) == '{"a": 1}' and data.query_preview(None) == ""


def test_success_rate_is_short_and_never_rounds_to_a_false_100_or_0():
    assert [data.format_rate(r) for r in (1.0, 0.75, 2 / 3, 0.9996, 0.0, 0.0004)] == [
        "100%", "75%", "66.7%", "99.9%", "0%", "0.1%"]


def test_status_markers_need_no_emoji_font():
    labels = [theme.status_label(s) for s in theme.STATUSES] + [
        theme.worker_state_label(s) for s in theme.WORKER_STATE_COLOR]
    assert all(label.isascii() or set(label) - set(string.printable) <= {"●"} for label in labels)
    assert theme.status_label("failed") == "● failed" and theme.status_label(None) == "—"
    assert theme.status_markdown("lost", theme.STATE_COLOR) == ":red[●] lost"


# -- forms -----------------------------------------------------------------------------------
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def test_single_query_validation_explains_every_field():
    bad = forms.check_single("  ", "sometimes", "x" * 300, -1, forms.WHEN_DELAY, None, 0, NOW)
    assert set(bad.errors) == {"query", "priority", "session_id", "max_retries", "delay"}
    at = forms.check_single("q", "high", "", 2, forms.WHEN_AT, datetime(2026, 11, 27, 11, 0), None, NOW)
    assert "has passed" in at.errors["run_at"]
    later = datetime(2026, 11, 27, 13, 30)
    ok = forms.check_single(" q ", "high", " s ", 2, forms.WHEN_AT, later, None, NOW)
    assert ok.ok and ok.options == {"query": "q", "priority": "high", "session_id": "s",
                                    "max_retries": 2, "run_at": later.replace(tzinfo=timezone.utc)}
    assert forms.check_single("q", "low", "", 0, forms.WHEN_NOW, None, None, NOW).options["max_retries"] == 0
    assert "year" in forms.check_single("q", "low", "", 0, forms.WHEN_AT, datetime(2028, 1, 1),
                                        None, NOW).errors["run_at"]


def test_batch_validation():
    assert forms.parse_query_lines(" a \n\n b\n") == ["a", "b"]
    assert "at least one" in forms.check_batch("\n \n", "normal", "", 3).errors["queries"]
    too_many = "\n".join(["q"] * (forms.MAX_BATCH_QUERIES + 1))
    assert "at most" in forms.check_batch(too_many, "normal", "", 3).errors["queries"]
    assert forms.check_batch("a\nb", "normal", "", 3).options["queries"] == ["a", "b"]


# -- batch jobs -------------------------------------------------------------------------------
def test_read_csv_and_pick_the_query_column():
    frame = batch_jobs.read_csv("\ufeffid,Prompt,note\n1,héllo,x\n2,,y\n".encode("utf-8"))
    assert frame.columns.tolist() == ["id", "Prompt", "note"]
    assert batch_jobs.guess_query_column(frame) == "Prompt"
    queries, blank = batch_jobs.queries_from_column(frame, "Prompt")
    assert queries == ["héllo", ""] and blank == [2]
    assert "data row 2" in batch_jobs.describe_blank_rows(blank)
    assert batch_jobs.read_csv("a;b\n1;2\n".encode("latin-1")).shape == (1, 1)
    for bad, message in ((b"", "empty"), (b"only,header\n", "no rows"), (b'a,b\n"1,2\n', "CSV")):
        with pytest.raises(ValueError, match=message):
            batch_jobs.read_csv(bad)


def test_batch_submit_progress_and_results(queue, run_all):
    job = batch_jobs.submit_batch(queue, ["one", "two"], priority="high", session_id="b1",
                                  max_retries=1, label="two questions")
    progress = batch_jobs.batch_progress(queue, job)
    assert progress["total"] == 2 and progress["done"] == 0 and not progress["finished"]
    children = queue.search_tasks(session_id="b1", status="pending")["tasks"]
    assert sorted(c["payload"]["query"] for c in children) == ["one", "two"]
    assert {c["priority"] for c in children} == {"high"} and {c["max_retries"] for c in children} == {1}
    run_all()
    progress = batch_jobs.batch_progress(queue, job.batch_id)
    assert progress["finished"] and progress["fraction"] == 1.0 and progress["completed"] == 2
    results = pd.read_csv(io.BytesIO(batch_jobs.results_csv(queue, job)), encoding="utf-8-sig")
    assert results["query"].tolist() == ["one", "two"] and set(results["status"]) == {"completed"}
    assert results["answer"].str.contains("demo agent").all()
    with pytest.raises(ValidationError):
        batch_jobs.submit_batch(queue, ["ok", "  "])


def batch_parents(queue) -> list[str]:
    return [t["task_id"] for t in queue.search_tasks(task_type="batch_query", limit=100)["tasks"]]


def test_a_repeated_submit_with_the_same_idempotency_key_returns_the_first_batch(queue):
    data = b"query,who\nfine,me\nthanks,you\n"
    first = batch_jobs.submit_csv(queue, data, "query", idempotency_key="csv-key")
    again = batch_jobs.submit_csv(queue, data, "query", idempotency_key="csv-key")
    assert again.batch_id == first.batch_id and again.total == 2
    lines = batch_jobs.submit_batch(queue, ["a", "b", "c"], idempotency_key="batch-key")
    assert batch_jobs.submit_batch(queue, ["a", "b", "c"], idempotency_key="batch-key").batch_id \
        == lines.batch_id
    other = batch_jobs.submit_csv(queue, data, "query", idempotency_key="another-key")
    assert sorted(batch_parents(queue)) == sorted([first.batch_id, lines.batch_id, other.batch_id])
    assert queue.search_tasks(task_type="agent_query", limit=100)["total"] == 2 + 3 + 2


def test_idempotency_keys_follow_every_part():
    key = forms.idempotency_key("csv", "session", 0, "abc", "query")
    assert key == forms.idempotency_key("csv", "session", 0, "abc", "query")
    assert key.startswith("console:csv:")
    assert len({key, forms.idempotency_key("csv", "session", 1, "abc", "query"),
                forms.idempotency_key("csv", "session", 0, "abc", "prompt"),
                forms.idempotency_key("csv", "other", 0, "abc", "query"),
                forms.idempotency_key("batch", "session", 0, "abc", "query"),
                forms.idempotency_key("csv", "session", 0, "ab", "cquery")}) == 6


def test_csv_submit_writes_nothing_for_a_rejected_file(queue, run_all):
    with pytest.raises(ValidationError):
        batch_jobs.submit_csv(queue, b"query,n\nfine,1\n,2\n", "query")
    with pytest.raises(ValidationError):
        batch_jobs.submit_csv(queue, b"query\nfine\n", "missing")
    assert queue.get_queue_stats().submitted_tasks == 0
    job = batch_jobs.submit_csv(queue, b"query,who\nfine,me\nthanks,you\n", "query",
                                label="f.csv")
    assert job.total == 2 and job.label == "f.csv"
    run_all()
    results = pd.read_csv(io.BytesIO(batch_jobs.results_csv(queue, job)), encoding="utf-8-sig")
    assert results["query"].tolist() == ["fine", "thanks"] and results["who"].tolist() == ["me", "you"]
    assert set(results["status"]) == {"completed"}


# -- actions ------------------------------------------------------------------------------------
def test_apply_action_reports_done_skipped_and_missing(queue, run_all):
    done = queue.submit_task(AgentTask({"query": "finished"}))
    run_all()
    waiting = queue.submit_task(AgentTask({"query": "waiting"}))
    report = actions.apply_action(queue, "cancel", [waiting, done, "nope", waiting])
    assert report.done == [waiting] and [t for t, _ in report.skipped] == [done]
    assert report.missing == ["nope"] and report.level == "warning"
    assert report.summary().startswith("Cancelled 1 task. Skipped 1 (")
    report = actions.apply_action(queue, "retry", [waiting], priority="urgent")
    assert report.done == [waiting] and queue.get_task(waiting)["priority"] == "urgent"
    report = actions.apply_action(queue, "delete", [waiting, "nope"])
    assert len(report.done) == 1 and report.missing == ["nope"]
    with pytest.raises(ValueError):
        actions.apply_action(queue, "explode", [done])


def test_matching_ids_and_retry_all_failed(queue, run_all):
    failed = queue.submit_tasks([Task(task_type="boom", payload={}, max_retries=0) for _ in range(3)])
    run_all()
    ids, total = actions.matching_ids(queue, data.TaskFilters(status="failed"), 0, limit=2)
    assert len(ids) == 2 and total == 3
    report = actions.retry_all_failed(queue)
    assert sorted(report.done) == sorted(failed) and queue.count_tasks("failed") == 0


# -- charts --------------------------------------------------------------------------------------
def throughput_rows():
    return [{"minute": f"2026-11-27T12:0{m}:00.000+00:00", "submitted": 4, "completed": 3,
             "failed": m % 2, "retried": 0, "wait_p50_ms": None if m == 1 else 12.0,
             "wait_p95_ms": 40.0, "run_p50_ms": 500.0, "run_p95_ms": 1500.0} for m in range(3)]


def test_throughput_figure_from_rows():
    figure = charts.throughput_figure(throughput_rows())
    assert [t.name for t in figure.data] == ["Completed", "Failed", "Submitted"]
    assert list(figure.data[0].y) == [3, 3, 3] and list(figure.data[1].y) == [0, 1, 0]
    assert figure.layout.barmode == "stack"
    assert charts.totals(throughput_rows()) == {"submitted": 12, "completed": 9, "failed": 1, "retried": 0}


def test_latency_figure_in_seconds_with_gaps():
    figure = charts.latency_figure(throughput_rows())
    names = [t.name for t in figure.data]
    assert names == ["Queue wait p50", "Queue wait p95", "Run time p50", "Run time p95"]
    assert list(figure.data[0].y) == [0.012, None, 0.012]            # a gap, not a zero
    assert list(figure.data[3].y) == [1.5, 1.5, 1.5]


def test_chart_legends_sit_below_the_plot_clear_of_the_title():
    for figure in (charts.throughput_figure(throughput_rows()), charts.latency_figure(throughput_rows()),
                   charts.latency_figure([])):
        legend = figure.layout.legend
        assert legend.orientation == "h" and legend.yanchor == "top" and legend.y < 0
        assert figure.layout.title.text and figure.layout.margin.t >= 40


def test_charts_on_an_empty_queue():
    for build in (charts.throughput_figure, charts.latency_figure):
        figure = build([])
        assert figure.layout.annotations[0].text == "No data yet" and not figure.data


def test_charts_from_the_real_throughput_rows(queue, run_all):
    queue.submit_tasks([AgentTask({"query": "x"}) for _ in range(3)])
    run_all()
    rows = queue.throughput(60)
    figure = charts.throughput_figure(rows)
    assert sum(figure.data[0].y) == 3 and len(figure.data[0].x) == 60
    assert charts.latency_figure(rows).data[2].y[-1] is not None


# -- connection ------------------------------------------------------------------------------------
def test_which_redis_the_console_uses():
    assert configured_redis_url(Settings.from_mapping({"REDIS_URL": "redis://h:1/0"}), {}) == "redis://h:1/0"
    from_host = Settings.from_mapping({"REDIS_HOST": "cache", "REDIS_PORT": "6380"})
    assert configured_redis_url(from_host, {"REDIS_HOST": "cache"}) == "redis://cache:6380/0"
    # Nothing configured: embedded, never a guess at localhost:6379.
    assert configured_redis_url(Settings.from_mapping({}), {}) is None
