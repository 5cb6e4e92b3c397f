"""``TaskQueue``: submitting, reading, steering, events, expiry and stats, on a real Redis.

Every transition is followed by :func:`assert_consistent`, which checks that the task's
hash and every index (status sets, priority lists, leases, scheduled) agree.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from datetime import datetime

import pytest
import redis

from engine.submission import submit_row
from engine import (InvalidTransition, Settings, Task, TaskNotFound, TaskQueue, TaskScheduler,
                    TaskTimeout, TaskWorker, ValidationError)
from engine.connection import connect
from engine.worker import CLAIM_FIELDS
from engine.serialization import dumps
from tests.support.indexes import assert_consistent, namespace_keys
from tests.support.steps import Collector, claim, event_types, wait_for_waiter


def _fail_doc(task_id: str) -> str:
    return dumps({"task_id": task_id, "status": "failed", "result": None, "error": "boom"})


def _iso(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None
    return moment


# -- submit -------------------------------------------------------------------------------

def test_submit_writes_a_pending_task_in_its_priority_list(queue, redis_client):
    task_id = queue.submit_task(Task(task_type="echo", payload={"q": "hi"}, priority="high"))
    state = assert_consistent(redis_client, queue.keys, task_id, "pending")
    assert state["queued"] == {"high": 1}
    record = queue.get_task(task_id)
    assert record["payload"] == {"q": "hi"} and record["priority"] == "high"
    assert record["task_type"] == "echo" and record["attempts"] == 0
    assert record["result"] is None
    assert queue.get_task("0" * 32) is None


def test_submit_tasks_many_in_one_call_all_pending_in_order(queue, redis_client):
    tasks = [Task(task_type="bulk", payload={"i": i}) for i in range(5000)]
    started = time.monotonic()
    ids = queue.submit_tasks(tasks)
    elapsed = time.monotonic() - started
    assert ids == [t.task_id for t in tasks]
    assert redis_client.lrange(queue.keys.queue("normal"), 0, -1) == ids
    assert queue.count_tasks("pending") == 5000
    stats = queue.get_queue_stats()
    assert stats.submitted_tasks == 5000 and stats.depth_by_priority["normal"] == 5000
    assert elapsed < 10
    for task_id in (ids[0], ids[2500], ids[-1]):
        assert_consistent(redis_client, queue.keys, task_id, "pending")
    assert queue.submit_tasks([]) == []


def test_submit_tasks_with_one_bad_task_writes_nothing(queue, redis_client, namespace):
    good = [Task(task_type="bulk", payload={"i": i}) for i in range(10)]
    bad = Task(task_type="bulk", payload={"when": datetime.now()})
    with pytest.raises(ValidationError, match="not JSON-serialisable"):
        queue.submit_tasks([*good, bad, *good])
    with pytest.raises(ValidationError, match="expected a Task"):
        queue.submit_tasks([*good, "not a task"])
    assert namespace_keys(redis_client, namespace) == []


def test_idempotency_key_returns_the_first_id(queue):
    first = queue.submit_task(Task(task_type="x", idempotency_key="order-42"))
    again = queue.submit_task(Task(task_type="x", idempotency_key="order-42"))
    assert again == first
    assert queue.count_tasks("pending") == 1
    assert queue.get_queue_stats().submitted_tasks == 1


def test_resubmitting_the_same_task_object_does_not_duplicate_it(queue, redis_client):
    task = Task(task_type="x")
    first = queue.submit_task(task)
    (claimed, token), = claim(queue)
    assert claimed == first
    assert queue.submit_task(task) == first
    # Still one task, still running, still in exactly one index and not queued twice.
    assert_consistent(redis_client, queue.keys, first, "running")
    assert queue.get_queue_stats().submitted_tasks == 1
    assert queue.store.complete([(first, token, '{"result":1}', 1)]) == [1]


# -- reading --------------------------------------------------------------------------------

def test_get_task_status_keys_and_iso_times(queue):
    task_id = queue.submit_task(Task(task_type="x"))
    status = queue.get_task_status(task_id)
    assert {"task_id", "status", "created_at", "started_at", "worker_id"} <= set(status)
    assert status["task_id"] == task_id and status["status"] == "pending"
    assert abs(_iso(status["created_at"]).timestamp() - time.time()) < 60
    assert status["started_at"] is None and status["worker_id"] is None
    claim(queue, "worker-abcdef12")
    status = queue.get_task_status(task_id)
    assert status["status"] == "running" and status["worker_id"] == "worker-abcdef12"
    assert _iso(status["started_at"]) >= _iso(status["created_at"])
    assert queue.get_task_status("f" * 32) is None


def test_get_task_result_is_none_until_finished(queue, make_worker):
    task_id = queue.submit_task(Task(task_type="echo", payload={"n": 1}))
    assert queue.get_task_result(task_id) is None
    worker = make_worker(handlers={"echo": lambda t: {"got": t.payload["n"]}})
    assert worker.process_one()
    result = queue.get_task_result(task_id)
    assert result["status"] == "completed" and result["result"] == {"got": 1}
    assert result["error"] is None and result["attempts"] == 1
    assert isinstance(result["duration"], float) and result["duration"] >= 0
    assert queue.get_task(task_id)["result"] == {"got": 1}


def test_wait_for_result_wakes_when_a_worker_in_another_thread_completes(queue, make_worker):
    go, finished_at = threading.Event(), {}

    def handler(task):
        go.wait(5)
        finished_at["t"] = time.monotonic()
        return "answer"

    task_id = queue.submit_task(Task(task_type="slow"))
    worker = make_worker(handlers={"slow": handler})
    runner = threading.Thread(target=worker.process_one)
    runner.start()
    got = {}

    def wait():
        got["doc"] = queue.wait_for_result(task_id, timeout=10)
        got["t"] = time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_for_waiter(queue, task_id)     # registered on the task before blocking
    go.set()
    waiter.join(5)
    runner.join(5)
    assert got["doc"]["status"] == "completed" and got["doc"]["result"] == "answer"
    assert 0 <= got["t"] - finished_at["t"] < 0.5


def test_several_threads_waiting_on_one_task_all_get_the_result(queue, make_worker):
    task_id = queue.submit_task(Task(task_type="echo", payload={"v": 7}))
    results, errors = [], []

    def wait():
        try:
            results.append(queue.wait_for_result(task_id, timeout=10))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=wait) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_for_waiter(queue, task_id)
    make_worker(handlers={"echo": lambda t: t.payload}).process_one()
    for thread in threads:
        thread.join(5)
    assert errors == []
    assert [r["result"] for r in results] == [{"v": 7}] * 4
    # A late waiter reads the stored result at once.
    assert queue.wait_for_result(task_id, timeout=1)["result"] == {"v": 7}


def test_wait_for_result_timeout_and_unknown_task(queue):
    task_id = queue.submit_task(Task(task_type="never"))
    started = time.monotonic()
    with pytest.raises(TaskTimeout, match="still pending"):
        queue.wait_for_result(task_id, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2
    with pytest.raises(TaskNotFound):
        queue.wait_for_result("0" * 32, timeout=1)


def test_wait_after_a_retry_does_not_return_the_old_failure(queue, make_worker):
    task_id = queue.submit_task(Task(task_type="flaky", max_retries=0))
    calls = []

    def flaky(task):
        calls.append(task.attempt)
        if len(calls) == 1:
            raise RuntimeError("first run fails")
        return "second run works"

    worker = make_worker(handlers={"flaky": flaky})
    waiter = threading.Thread(target=lambda: queue.wait_for_result(task_id, timeout=5))
    waiter.start()
    wait_for_waiter(queue, task_id)
    worker.process_one()
    waiter.join(5)
    assert queue.get_task_status(task_id)["status"] == "failed"
    queue.retry_task(task_id)
    with pytest.raises(TaskTimeout):   # the earlier failure must not answer this wait
        queue.wait_for_result(task_id, timeout=0.2)
    worker.process_one()
    assert queue.wait_for_result(task_id, timeout=2)["result"] == "second run works"


# -- status index consistency through every transition -----------------------------------------

def test_indexes_agree_through_complete(queue, redis_client):
    task_id = queue.submit_task(Task(task_type="x"))
    assert_consistent(redis_client, queue.keys, task_id, "pending")
    (_, token), = claim(queue)
    assert_consistent(redis_client, queue.keys, task_id, "running")
    assert queue.store.complete([(task_id, token, '{"result":null}', 3)]) == [1]
    assert_consistent(redis_client, queue.keys, task_id, "completed")


def test_indexes_agree_through_fail_to_retry_and_to_failed(queue, redis_client):
    task_id = queue.submit_task(Task(task_type="x", max_retries=1))
    (_, token), = claim(queue)
    assert queue.store.fail([(task_id, token, "E: boom", "tb", 0, _fail_doc(task_id))]) == [2]
    assert_consistent(redis_client, queue.keys, task_id, "retry")
    assert queue.promote_due() == 1
    assert_consistent(redis_client, queue.keys, task_id, "pending")
    (_, token), = claim(queue)
    assert queue.store.fail([(task_id, token, "E: boom", "tb", 0, _fail_doc(task_id))]) == [1]
    assert_consistent(redis_client, queue.keys, task_id, "failed")
    assert queue.get_task(task_id)["attempts"] == 2


def _in_state(queue: TaskQueue, state: str) -> str:
    """A fresh task brought to ``state`` (pending, scheduled, retry or running)."""
    if state == "scheduled":
        return TaskScheduler(queue).schedule_task_in(Task(task_type="x"), 3600)
    task_id = queue.submit_task(Task(task_type="x"))
    if state in ("running", "retry"):
        (_, token), = claim(queue)
        if state == "retry":
            queue.store.fail([(task_id, token, "E", "tb", 60_000, _fail_doc(task_id))])
    return task_id


@pytest.mark.parametrize("state", ["pending", "scheduled", "retry", "running"])
def test_cancel_in_each_unfinished_state(queue, redis_client, state):
    task_id = _in_state(queue, state)
    assert_consistent(redis_client, queue.keys, task_id, state)
    assert queue.cancel_task(task_id, reason="user changed their mind") == state
    assert_consistent(redis_client, queue.keys, task_id, "cancelled")
    result = queue.get_task_result(task_id)
    assert result["status"] == "cancelled" and result["error"] == "user changed their mind"
    assert redis_client.pttl(queue.keys.task(task_id)) > 0
    assert "task.cancelled" in event_types(queue, task_id)
    assert queue.get_queue_stats().cancelled_tasks == 1
    with pytest.raises(InvalidTransition, match="cancelled"):
        queue.cancel_task(task_id)


def test_cancel_finished_or_unknown_task_is_refused(queue, make_worker, redis_client):
    task_id = queue.submit_task(Task(task_type="echo"))
    make_worker(handlers={"echo": lambda t: 1}).process_one()
    with pytest.raises(InvalidTransition, match="completed"):
        queue.cancel_task(task_id)
    assert_consistent(redis_client, queue.keys, task_id, "completed")
    assert queue.get_task_result(task_id)["status"] == "completed"
    with pytest.raises(TaskNotFound):
        queue.cancel_task("0" * 32)


@pytest.mark.parametrize("finished", ["failed", "cancelled"])
def test_retry_task_reopens_failed_and_cancelled_tasks(queue, redis_client, finished):
    task_id = queue.submit_task(Task(task_type="x", max_retries=0))
    if finished == "failed":
        (_, token), = claim(queue)
        queue.store.fail([(task_id, token, "E: boom", "tb", 0, _fail_doc(task_id))])
    else:
        queue.cancel_task(task_id)
    assert_consistent(redis_client, queue.keys, task_id, finished)
    assert queue.retry_task(task_id, priority="urgent") == finished
    state = assert_consistent(redis_client, queue.keys, task_id, "pending")
    assert state["queued"] == {"urgent": 1}
    record = queue.get_task(task_id)
    assert record["attempts"] == 0 and record["error"] is None
    assert redis_client.pttl(queue.keys.task(task_id)) == -1    # no longer expiring
    with pytest.raises(InvalidTransition, match="pending"):
        queue.retry_task(task_id)
    with pytest.raises(TaskNotFound):
        queue.retry_task("0" * 32)


@pytest.mark.parametrize("state", ["pending", "scheduled", "retry", "running"])
def test_requeue_task_puts_it_back_in_line(queue, redis_client, state):
    task_id = _in_state(queue, state)
    assert queue.requeue_task(task_id, priority="low") == state
    pending = assert_consistent(redis_client, queue.keys, task_id, "pending")
    assert pending["queued"] == {"low": 1}
    assert queue.get_task_status(task_id)["worker_id"] is None


def test_requeue_of_a_running_task_fences_out_its_old_worker(queue):
    task_id = queue.submit_task(Task(task_type="x"))
    (_, old_token), = claim(queue, "worker-old00000")
    queue.requeue_task(task_id)
    (_, new_token), = claim(queue, "worker-new00000")
    assert queue.store.complete([(task_id, old_token, '{"result":"old"}', 1)]) == [-3]
    assert queue.store.complete([(task_id, new_token, '{"result":"new"}', 1)]) == [1]
    assert queue.get_task_result(task_id)["result"] == "new"


def test_requeue_finished_task_is_refused(queue, redis_client):
    task_id = queue.submit_task(Task(task_type="x"))
    queue.cancel_task(task_id)
    with pytest.raises(InvalidTransition):
        queue.requeue_task(task_id)
    assert_consistent(redis_client, queue.keys, task_id, "cancelled")


@pytest.mark.parametrize("state", ["pending", "scheduled", "retry", "running", "completed",
                                   "failed", "cancelled"])
def test_delete_removes_every_trace(queue, redis_client, state):
    if state in ("completed", "failed", "cancelled"):
        task_id = queue.submit_task(Task(task_type="x", max_retries=0))
        if state == "cancelled":
            queue.cancel_task(task_id)
        else:
            (_, token), = claim(queue)
            if state == "completed":
                queue.store.complete([(task_id, token, '{"result":1}', 1)])
            else:
                queue.store.fail([(task_id, token, "E", "tb", 0, _fail_doc(task_id))])
    else:
        task_id = _in_state(queue, state)
    keep = queue.submit_task(Task(task_type="other"))
    assert_consistent(redis_client, queue.keys, task_id, state)
    assert queue.delete_task(task_id) is True
    assert_consistent(redis_client, queue.keys, task_id, "gone")
    assert queue.delete_task(task_id) is False
    assert_consistent(redis_client, queue.keys, keep, "pending")
    assert "task.deleted" in event_types(queue, task_id)


def test_purge_takes_only_finished_statuses(queue, redis_client):
    ids = [queue.submit_task(Task(task_type="x")) for _ in range(3)]
    for task_id in ids[:2]:
        queue.cancel_task(task_id)
    with pytest.raises(ValidationError, match="finished status"):
        queue.purge("pending")
    assert queue.purge("cancelled") == 2
    for task_id in ids[:2]:
        assert_consistent(redis_client, queue.keys, task_id, "gone")
    assert_consistent(redis_client, queue.keys, ids[2], "pending")


# -- scheduled tasks --------------------------------------------------------------------------

def test_scheduled_task_waits_until_due(clocked_queue, fixed_clock, make_worker, redis_client):
    ran = []
    worker = make_worker(queue=clocked_queue, handlers={"later": lambda t: ran.append(t.task_id)})
    task_id = TaskScheduler(clocked_queue).schedule_task_in(Task(task_type="later"), 60)
    assert_consistent(redis_client, clocked_queue.keys, task_id, "scheduled")
    status = clocked_queue.get_task(task_id)
    assert _iso(status["due_at"]).timestamp() * 1000 == fixed_clock.ms + 60_000
    assert worker.process_one() is False            # not before it is due
    fixed_clock.advance(59)
    assert clocked_queue.promote_due() == 0 and worker.process_one() is False
    assert_consistent(redis_client, clocked_queue.keys, task_id, "scheduled")
    fixed_clock.advance(1)
    assert clocked_queue.promote_due() == 1
    assert_consistent(redis_client, clocked_queue.keys, task_id, "pending")
    assert worker.process_one() is True
    assert ran == [task_id]
    assert_consistent(redis_client, clocked_queue.keys, task_id, "completed")


def test_schedule_task_at_a_time(clocked_queue, fixed_clock, redis_client):
    scheduler = TaskScheduler(clocked_queue)
    due = datetime.fromtimestamp((fixed_clock.ms + 3_600_000) / 1000).astimezone()
    task_id = scheduler.schedule_task(Task(task_type="x"), due)
    assert_consistent(redis_client, clocked_queue.keys, task_id, "scheduled")
    past = datetime.fromtimestamp((fixed_clock.ms - 1000) / 1000).astimezone()
    assert_consistent(redis_client, clocked_queue.keys,
                      scheduler.schedule_task(Task(task_type="x"), past), "pending")
    with pytest.raises(ValidationError):
        scheduler.schedule_task_in(Task(task_type="x"), -1)
    with pytest.raises(ValidationError):
        scheduler.schedule_task(Task(task_type="x"), "tomorrow")
    fixed_clock.advance(3600)
    assert scheduler.run_pending() == 1
    assert_consistent(redis_client, clocked_queue.keys, task_id, "pending")


def test_concurrent_promoters_never_double_fire(clocked_queue, fixed_clock, redis_url, namespace,
                                                settings, redis_client):
    ids = clocked_queue.submit_tasks([Task(task_type="x", delay=10, payload={"i": i})
                                      for i in range(200)])
    assert clocked_queue.count_tasks("scheduled") == 200
    fixed_clock.advance(11)
    clients = [connect(redis_url) for _ in range(6)]
    queues = [TaskQueue(c, settings=settings, namespace=namespace, clock=fixed_clock)
              for c in clients]
    start, moved = threading.Barrier(len(queues)), []

    def promote(q):
        start.wait(5)
        for _ in range(5):
            moved.append(q.store.promote(limit=37)[0])

    threads = [threading.Thread(target=promote, args=(q,)) for q in queues]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    for client in clients:
        client.close()
    assert sum(moved) == 200
    listed = redis_client.lrange(clocked_queue.keys.queue("normal"), 0, -1)
    assert Counter(listed) == Counter({task_id: 1 for task_id in ids})
    events = clocked_queue.read_events(count=10_000)
    assert sum(e["type"] == "task.submitted" for e in events) == 200
    assert sum(e["type"] == "task.status_changed" and e["data"]["status"] == "pending"
               for e in events) == 200
    for task_id in ids[::20]:
        assert_consistent(redis_client, clocked_queue.keys, task_id, "pending")


# -- events -------------------------------------------------------------------------------------

def test_subscribe_to_events_delivers_json_messages_until_stopped(queue, make_worker):
    collector = Collector()
    subscription = queue.subscribe_to_events(collector)
    try:
        assert subscription.running
        ok = queue.submit_task(Task(task_type="echo"))
        bad = queue.submit_task(Task(task_type="boom", max_retries=1, retry_delay=0))
        worker = make_worker(handlers={"echo": lambda t: "ok",
                                       "boom": lambda t: 1 / 0})
        for _ in range(3):
            worker.process_one()
        seen = collector.wait_for([("task.submitted", ok), ("task.status_changed", ok),
                                   ("task.completed", ok), ("task.retry", bad),
                                   ("task.failed", bad)])
    finally:
        subscription.stop()
    assert not subscription.running
    completed = next(e for e in seen if e["type"] == "task.completed")
    assert completed["data"]["task_id"] == ok and completed["data"]["status"] == "completed"
    failed = next(e for e in seen if e["type"] == "task.failed")
    assert "ZeroDivisionError" in failed["data"]["error"] and failed["data"]["attempt"] == 2
    # The stream holds the same events, in the same order.
    stored = [(e["type"], e["data"]) for e in queue.read_events()]
    assert stored == [(e["type"], e["data"]) for e in seen]
    # After stop nothing more arrives.
    queue.submit_task(Task(task_type="echo"))
    time.sleep(0.1)
    assert collector.messages.empty()


def test_read_events_after_an_id_catches_up(queue):
    first = queue.submit_task(Task(task_type="x"))
    mark = queue.read_events()[-1]["id"]
    second = queue.submit_task(Task(task_type="x"))
    queue.cancel_task(second)
    later = queue.read_events(after=mark)
    assert [(e["type"], e["data"]["task_id"]) for e in later] == [
        ("task.submitted", second), ("task.cancelled", second)]
    assert all(e["data"]["task_id"] != first for e in later)


def test_a_failing_callback_does_not_end_the_subscription(queue):
    collector = Collector()

    def callback(message):
        collector(message)
        raise RuntimeError("callback bug")

    subscription = queue.subscribe_to_events(callback)
    try:
        a = queue.submit_task(Task(task_type="x"))
        b = queue.submit_task(Task(task_type="x"))
        collector.wait_for([("task.submitted", a), ("task.submitted", b)])
        assert subscription.running
    finally:
        subscription.stop()


# -- expiry and trimming ----------------------------------------------------------------------------

def test_finished_tasks_expire_and_the_index_is_trimmed(redis_url, namespace, fixed_clock,
                                                        make_worker, redis_client):
    settings = Settings.from_mapping({}, heartbeat_interval=0.2, lease_timeout=1.0,
                                     result_ttl=30.0, failed_ttl=40.0)
    client = connect(redis_url)
    try:
        queue = TaskQueue(client, settings=settings, namespace=namespace, clock=fixed_clock)
        worker = make_worker(queue=queue, handlers={"ok": lambda t: "r", "bad": lambda t: 1 / 0})
        first = queue.submit_task(Task(task_type="ok"))
        worker.process_one()
        for key in (queue.keys.result(first), queue.keys.task(first)):
            assert 0 < redis_client.pttl(key) <= 30_000
        dead = queue.submit_task(Task(task_type="bad", max_retries=0))
        worker.process_one()
        assert 30_000 < redis_client.pttl(queue.keys.result(dead)) <= 40_000
        fixed_clock.advance(31)
        second = queue.submit_task(Task(task_type="ok"))
        worker.process_one()
        # The first entry pointed at a task that has expired by the clock: trimmed.
        assert redis_client.zrange(queue.keys.status["completed"], 0, -1) == [second]
        stats = queue.get_queue_stats()
        assert stats.completed_tasks == 2 and stats.failed_tasks == 1
        assert [t["task_id"] for t in queue.list_tasks(status="completed")] == [second]
    finally:
        client.close()


def test_finished_index_is_capped(redis_url, namespace, make_worker):
    settings = Settings.from_mapping({}, heartbeat_interval=0.2, lease_timeout=1.0,
                                     max_finished_index=3)
    client = connect(redis_url)
    try:
        queue = TaskQueue(client, settings=settings, namespace=namespace)
        queue.submit_tasks([Task(task_type="ok") for _ in range(5)])
        make_worker(queue=queue, handlers={"ok": lambda t: 1}).start(burst=True)
        assert queue.count_tasks("completed") == 3
        assert queue.get_queue_stats().completed_tasks == 5
    finally:
        client.close()


# -- stats ----------------------------------------------------------------------------------------------

def test_queue_stats_counts_depths_and_success_rate(queue, make_worker):
    assert queue.get_queue_stats().success_rate == 1.0
    for priority in ("urgent", "high", "high", "low"):
        queue.submit_task(Task(task_type="ok", priority=priority))
    queue.submit_task(Task(task_type="bad", max_retries=0, priority="low"))
    stats = queue.get_queue_stats()
    assert stats.pending_tasks == 5
    assert stats.depth_by_priority == {"urgent": 1, "high": 2, "normal": 0, "low": 2}
    (running, _), = claim(queue)                       # the urgent one
    stats = queue.get_queue_stats()
    assert (stats.pending_tasks, stats.running_tasks) == (4, 1)
    worker = make_worker(handlers={"ok": lambda t: 1, "bad": lambda t: 1 / 0})
    while worker.process_one():
        pass
    stats = queue.get_queue_stats()
    assert (stats.pending_tasks, stats.running_tasks) == (0, 1)
    assert (stats.completed_tasks, stats.failed_tasks, stats.failed_in_index) == (3, 1, 1)
    assert stats.success_rate == pytest.approx(0.75)
    assert stats.as_dict()["success_rate"] == pytest.approx(0.75)
    assert stats.submitted_tasks == 5


def test_active_workers_counts_only_recent_heartbeats(clocked_queue, fixed_clock):
    store = clocked_queue.store
    store.heartbeat("worker-aaaaaaaa", {"state": "running"}, [])
    fixed_clock.advance(0.5)
    store.heartbeat("worker-bbbbbbbb", {"state": "running"}, [])
    assert clocked_queue.get_queue_stats().active_workers == 2
    fixed_clock.advance(0.7)     # a's last beat is 1.2 s old: older than the 1 s lease
    assert clocked_queue.get_queue_stats().active_workers == 1
    states = {w["worker_id"]: w["state"] for w in clocked_queue.list_workers()}
    assert states == {"worker-aaaaaaaa": "lost", "worker-bbbbbbbb": "running"}
    fixed_clock.advance(5)
    assert clocked_queue.get_queue_stats().active_workers == 0


# -- list_tasks -----------------------------------------------------------------------------------------

def test_list_tasks_newest_first_with_paging_and_filters(clocked_queue, fixed_clock):
    queue = clocked_queue
    ids = []
    for i in range(6):
        ids.append(queue.submit_task(Task(
            task_type="chat" if i % 2 else "search", priority="high" if i < 3 else "low",
            session_id="s-odd" if i % 2 else "s-even", payload={"i": i})))
        fixed_clock.advance(0.01)
    newest_first = ids[::-1]
    assert [t["task_id"] for t in queue.list_tasks()] == newest_first
    assert [t["task_id"] for t in queue.list_tasks(limit=2, offset=1)] == newest_first[1:3]
    assert [t["task_id"] for t in queue.list_tasks(priority="high")] == ids[2::-1]
    assert [t["task_id"] for t in queue.list_tasks(task_type="chat")] == ids[5::-2]
    assert [t["task_id"] for t in queue.list_tasks(session_id="s-even", limit=2)] == [ids[4], ids[2]]
    queue.cancel_task(ids[0])
    assert [t["task_id"] for t in queue.list_tasks(status="cancelled")] == [ids[0]]
    assert [t["task_id"] for t in queue.list_tasks()][0] == ids[0]     # entered its status last
    assert len(queue.list_tasks(status="PENDING")) == 5
    record = queue.list_tasks(limit=1)[0]
    assert record["payload"] == {"i": 0} and record["status"] == "cancelled"


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"limit": "10"}, "limit"),
    ({"offset": -1}, "offset"), ({"status": "done"}, "unknown status"),
    ({"priority": "asap"}, "priority"),
])
def test_list_tasks_rejects_bad_arguments(queue, kwargs, fragment):
    with pytest.raises(ValidationError, match=fragment):
        queue.list_tasks(**kwargs)


def test_threads_that_submit_leave_no_connections_behind(queue, redis_client):
    import gc

    def clients() -> int:
        return len(redis_client.client_list())

    queue.ping()
    before = clients()
    threads = [threading.Thread(target=queue.submit_task, args=(Task(task_type="echo"),))
               for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert queue.count_tasks("pending") == 30
    del threads
    gc.collect()
    # Each thread's own connection closes when the thread ends; the server sees them go.
    deadline = time.monotonic() + 5
    while clients() > before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)   # the server notices closed sockets on its next event-loop pass
    assert clients() <= before + 2


def test_waiting_on_ended_tasks_reuses_one_connection(queue, make_worker, redis_client):
    ids = queue.submit_tasks([Task(task_type="echo", payload={"i": i}) for i in range(5)])
    make_worker(handlers={"echo": lambda task: task.payload}).start(burst=True)
    queue.wait_for_result(ids[0], timeout=5)          # this thread's connection is open now
    before = redis_client.info("stats")["total_connections_received"]
    assert [queue.wait_for_result(i, timeout=5)["result"]["i"] for i in ids] == [0, 1, 2, 3, 4]
    # Every reply of the pipelined wait is read, so nothing is left on the socket that
    # would make the next call throw the connection away and open a new one.
    assert redis_client.info("stats")["total_connections_received"] == before


def _wait_and_claim(queue: TaskQueue, count: int) -> tuple[bool, list[str]]:
    """One worker wait: (whether the marker woke it, ids claimed). Blocks at most 50 ms."""
    woke, flat = queue.store.wait_and_claim("worker-test0000", count, 0.05)
    return woke, flat[::CLAIM_FIELDS]


def test_a_pending_task_always_has_a_wake_up_waiting_for_it(queue, redis_client):
    # Submit wakes workers only for a list that was empty; a full claim leaves the marker.
    # Walk the states that can strand a task: none must leave one waiting without a wake-up.
    ids = queue.submit_tasks([Task(task_type="t") for _ in range(2)])
    assert _wait_and_claim(queue, 1) == (True, ids[:1])          # full claim: marker left
    late = queue.submit_task(Task(task_type="t"))                 # list not empty: no new marker
    assert _wait_and_claim(queue, 5) == (True, [ids[1], late])   # partial: lists now empty
    assert _wait_and_claim(queue, 5) == (False, [])              # nothing pending, no marker
    urgent = queue.submit_task(Task(task_type="t", priority="urgent"))
    assert _wait_and_claim(queue, 5) == (True, [urgent])
    assert redis_client.zcard(queue.keys.marker) == 0


def test_default_retry_policy_is_not_stored_but_reaches_the_worker(queue, redis_client):
    plain = queue.submit_task(Task(task_type="t", retry_delay=60))   # the built-in defaults
    custom = queue.submit_task(Task(task_type="t", retry_delay=5, backoff="exponential",
                                    max_retry_delay=50))
    stored = redis_client.hgetall(queue.keys.task(plain))
    assert not {"retry_delay", "backoff", "max_retry_delay", "id"} & set(stored)
    assert redis_client.hmget(queue.keys.task(custom), "retry_delay", "backoff",
                              "max_retry_delay") == ["5000", "exponential", "50000"]
    worker = TaskWorker(queue)
    held = {t.task_id: t.extra for t in worker.claim(2)}
    assert held[plain] == {"retry_delay": 60.0, "backoff": "fixed", "max_retry_delay": 3600.0}
    assert held[custom] == {"retry_delay": 5.0, "backoff": "exponential", "max_retry_delay": 50.0}


def test_minute_counters_expire_whichever_count_made_them(clocked_queue, fixed_clock, redis_client,
                                                          make_worker):
    queue = clocked_queue
    minute = fixed_clock.ms // 60_000
    queue.submit_task(Task(task_type="t"))
    queue.submit_task(Task(task_type="t"))
    key = queue.keys.minute_stats(minute)
    assert redis_client.hget(key, "submitted") == "2"
    assert 24 * 3600_000 < redis_client.pttl(key) <= 25 * 3600_000
    fixed_clock.advance(60)                      # the next minute's key is made by a claim
    TaskWorker(queue).claim(1)
    later = queue.keys.minute_stats(minute + 1)
    assert redis_client.exists(later) and redis_client.pttl(later) > 24 * 3600_000


def test_reply_spinning_on_changes_nothing_but_speed(redis_url, namespace, settings):
    assert settings.reply_spin_us == 0              # off by default (engine/config.py says why)
    quiet = TaskQueue(connect(redis_url), settings=dataclasses.replace(settings, reply_spin_us=250),
                      namespace=namespace)
    task_id = quiet.submit_task(Task(task_type="echo", payload={"x": 1}))
    worker = TaskWorker(quiet)
    worker.register_handler("echo", lambda task: task.payload)
    worker.start(burst=True)
    assert quiet.get_task_result(task_id)["result"] == {"x": 1}


def test_scripts_read_redis_time_to_the_millisecond(queue, redis_client):
    # Scripts build the time's text from TIME's seconds and microseconds: every stored
    # time must fall between two TIME readings taken around the submit, whatever the µs.
    for _ in range(200):
        before = _server_ms(redis_client)
        task_id = queue.submit_task(Task(task_type="t"))
        after = _server_ms(redis_client)
        created = redis_client.hget(queue.keys.task(task_id), "created_at")
        assert created.isdigit() and before <= int(created) <= after


def _server_ms(client) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def test_payloads_larger_than_the_socket_buffer_arrive_whole(redis_url, namespace, settings):
    # A submit is written with os.write; what the socket buffer (~4 MB on loopback here)
    # does not take at once must still reach Redis, byte for byte, and the next call on
    # the same connection must be intact.
    queue = TaskQueue(connect(redis_url), namespace=namespace,
                      settings=dataclasses.replace(settings, max_payload_bytes=32 * 2**20))
    big = {"text": "é" * 5_000_000 + "end"}        # ~10 MB of UTF-8
    ids = [queue.submit_task(Task(task_type="big", payload=big)) for _ in range(2)]
    small = queue.submit_task(Task(task_type="small", payload={"n": 1}))
    for task_id in ids:
        assert queue.get_task(task_id)["payload"] == big
    assert queue.get_task(small)["payload"] == {"n": 1}


def test_one_script_call_larger_than_a_lua_stack_slice(queue, redis_client):
    # bulk() hands Redis at most 4,000 values a command (Lua's C stack is limited), one
    # command when they fit: 2,500 tasks in one submit call put 5,000 values into the
    # pending index, so both paths run, and every task must land in order, counted once.
    rows = [submit_row(Task(task_type="t", payload={"i": i}), queue.settings) for i in range(2500)]
    ids = queue.store.submit(rows)
    assert ids == [row[0] for row in rows]
    assert redis_client.lrange(queue.keys.queues[2], 0, -1) == ids        # normal, FIFO
    assert redis_client.zcard(queue.keys.status["pending"]) == 2500
    assert redis_client.hget(queue.keys.stats, "submitted") == "2500"


def test_an_error_reply_is_raised_and_leaves_the_connection_usable(queue, redis_client):
    # Replies are parsed straight off the socket on plain connections: a script's error
    # must still raise redis-py's exception, write nothing, and leave the next call intact.
    row = submit_row(Task(task_type="t"), queue.settings)
    row[2] = "{not json"                       # options that submit.lua cannot decode
    with pytest.raises(redis.ResponseError):
        queue.store.submit([row])
    assert not redis_client.exists(queue.keys.task(row[0]))
    assert queue.get_task_status(queue.submit_task(Task(task_type="t")))["status"] == "pending"


def test_a_connection_the_server_closed_is_replaced_before_the_next_submit(queue, redis_client):
    first = queue.submit_task(Task(task_type="t"))
    own = queue.store.wire.direct()            # this thread's connection, as submits use it
    own.send_command("CLIENT", "ID")
    assert redis_client.client_kill_filter(_id=own.read_response()) == 1
    second = queue.submit_task(Task(task_type="t"))
    assert [queue.get_task_status(i)["status"] for i in (first, second)] == ["pending"] * 2
