"""A live refresh costs a bounded number of Redis calls, however many tasks are stored.

Each loader below is what one tick of a live fragment runs (the Overview fragment calls
``load_overview``, the Tasks fragment ``load_task_page``, and so on). They are measured
with 100 tasks stored, then again with 10,000: the round trips must not change, and the
commands inside them must stay under a bound that does not depend on the task count.
"""
from __future__ import annotations

from console import data
from console.testing import count_redis_calls
from engine import AgentTask, PermanentError, Task

SMALL, LARGE = 100, 10_000


def fill(queue, pending: int, scheduled: int) -> None:
    queue.submit_tasks([AgentTask({"query": f"question number {i}"}, session_id=f"s{i % 7}",
                                  priority=("low", "normal", "high")[i % 3]) for i in range(pending)]
                       + [AgentTask({"query": f"later {i}"}, delay=3600 + i) for i in range(scheduled)])


def refreshes(queue, last_event_id: str) -> dict:
    """One tick of every live part of the console."""
    return {
        "overview": lambda: data.load_overview(queue),
        "sidebar summary": lambda: data.load_counts(queue),
        "tasks, all statuses": lambda: data.load_task_page(queue, data.TaskFilters(), 0, 50),
        "tasks, one status": lambda: data.load_task_page(
            queue, data.TaskFilters(status="pending"), 0, 50),
        "tasks, last hour": lambda: data.load_task_page(
            queue, data.TaskFilters(time_range="Last hour"), 0, 50),
        "tasks, text search": lambda: data.load_task_page(
            queue, data.TaskFilters(search="number 4"), 0, 50),
        "tasks, priority + session": lambda: data.load_task_page(
            queue, data.TaskFilters(priority="high", session_id="s3"), 0, 50),
        "workers": lambda: data.load_workers(queue),
        "schedules": lambda: queue.list_scheduled(limit=20),
        "failed groups": lambda: queue.failed_task_groups(scan_limit=2000),
        "events": lambda: queue.read_events(after=last_event_id, count=1000),
    }


def measure(queue, last_event_id: str) -> dict:
    out = {}
    for name, refresh in refreshes(queue, last_event_id).items():
        with count_redis_calls(queue.client) as calls:
            refresh()
        out[name] = calls
    return out


def test_refresh_cost_does_not_grow_with_stored_tasks(queue, make_worker):
    # 100 tasks: 10 failed, 20 completed, 20 scheduled, 50 pending.
    queue.submit_tasks([Task(task_type="boom", payload={}, max_retries=0) for _ in range(10)]
                       + [Task(task_type="ok", payload={}) for _ in range(20)])
    worker = make_worker()
    worker.register_handler("ok", lambda task: {"answer": "fine"})
    worker.register_handler("boom", lambda task: (_ for _ in ()).throw(PermanentError("no")))
    worker.start(burst=True)
    fill(queue, pending=50, scheduled=20)
    last_event_id = queue.read_events(count=1)[-1]["id"]
    assert queue.search_tasks()["total"] == SMALL
    small = measure(queue, last_event_id)

    fill(queue, pending=LARGE - SMALL - 2000, scheduled=2000)
    assert queue.search_tasks()["total"] == LARGE
    large = measure(queue, last_event_id)
    # Paging deep into one status is one skip inside Redis, not a longer read.
    with count_redis_calls(queue.client) as deep:
        page = data.load_task_page(queue, data.TaskFilters(status="pending"), 150, 50)
    assert len(page.records) == 50
    assert (deep.round_trips, deep.commands) == (large["tasks, one status"].round_trips,
                                                 large["tasks, one status"].commands)

    scan_bound = data.SEARCH_SCAN + 7 * 2 + 50 + 1     # index reads, scanned hashes, page, id try
    # Counting batch parents looks at the newest ids of four status indexes.
    count_bound = 4 * (data.BATCH_COUNT_WINDOW + 1) + 100
    for name in small:
        assert large[name].round_trips == small[name].round_trips, (
            name, small[name].names, large[name].names)
        assert large[name].round_trips <= (7 if name == "overview" else 5), (name, large[name].names)
        if name in ("overview", "sidebar summary"):
            assert large[name].commands <= count_bound, (name, large[name].commands)
        elif name in ("tasks, text search", "tasks, priority + session", "events"):
            # These look at a window of the newest entries: bounded, not constant.
            assert large[name].commands <= scan_bound, (name, large[name].commands)
        elif name == "failed groups":
            assert large[name].commands <= 2000 + 1
        else:
            assert large[name].commands == small[name].commands, (
                name, small[name].names, large[name].names)
