"""Leases, fencing, stalls and heartbeats: a task whose worker stops is never lost, and a
worker that lost its lease can never overwrite the newer attempt.

Time is the fixed clock: claim, ``fixed_clock.advance``, then ``reap_expired_leases``.
"""
from __future__ import annotations

import threading

from engine import Settings, Task, TaskQueue
from engine.connection import connect
from engine.serialization import dumps
from tests.support.indexes import assert_consistent
from tests.support.steps import claim, event_types, wait_for_waiter


def _doc(value) -> str:
    return dumps({"status": "completed", "result": value, "error": None})


def test_expired_lease_goes_back_to_pending_and_the_late_worker_is_fenced_out(
        clocked_queue, fixed_clock, make_worker, redis_client):
    queue = clocked_queue
    task_id = queue.submit_task(Task(task_type="x"))
    (_, token_a), = claim(queue, "worker-aaaaaaaa")
    fixed_clock.advance(0.9)
    assert queue.reap_expired_leases() == (0, 0)            # lease still valid
    fixed_clock.advance(0.2)
    assert queue.reap_expired_leases() == (1, 0)
    state = assert_consistent(redis_client, queue.keys, task_id, "pending")
    assert state["queued"] == {"normal": 1}
    record = queue.get_task(task_id)
    assert record["attempts"] == 0 and record["stalls"] == 1 and record["worker_id"] is None
    worker_b = make_worker(queue=queue, worker_id="worker-bbbbbbbb",
                           handlers={"x": lambda t: "from b"})
    assert worker_b.process_one()
    # A comes back from its freeze and reports: refused, whatever it reports.
    assert queue.store.complete([(task_id, token_a, _doc("from a"), 5)]) == [-3]
    assert queue.store.fail([(task_id, token_a, "E", "tb", 0, _doc(None))]) == [-3]
    assert queue.store.heartbeat("worker-aaaaaaaa", {}, [(task_id, token_a)]) == [task_id, "completed"]
    assert queue.store.release([(task_id, token_a)]) == 0
    result = queue.get_task_result(task_id)
    assert result["result"] == "from b" and result["worker_id"] == "worker-bbbbbbbb"
    assert_consistent(redis_client, queue.keys, task_id, "completed")
    assert queue.get_queue_stats().completed_tasks == 1
    reaped = [e for e in queue.read_events() if e["data"].get("reason") == "lease expired"]
    assert [e["data"]["worker_id"] for e in reaped] == ["worker-aaaaaaaa"]


def test_frozen_worker_handler_result_is_rejected_after_another_worker_ran_it(
        clocked_queue, fixed_clock, make_worker):
    queue = clocked_queue
    in_handler, release = threading.Event(), threading.Event()

    def frozen(task):
        in_handler.set()
        release.wait(5)
        return "stale answer"

    task_id = queue.submit_task(Task(task_type="x"))
    worker_a = make_worker(queue=queue, handlers={"x": frozen})
    thread = threading.Thread(target=worker_a.process_one)
    thread.start()
    try:
        assert in_handler.wait(5)
        fixed_clock.advance(2)
        assert queue.reap_expired_leases() == (1, 0)
        worker_b = make_worker(queue=queue, handlers={"x": lambda t: "fresh answer"})
        assert worker_b.process_one()
    finally:
        release.set()
        thread.join(5)
    assert worker_a.stats["lost"] == 1 and worker_a.stats["processed"] == 0
    assert worker_b.stats["processed"] == 1
    assert queue.get_task_result(task_id)["result"] == "fresh answer"
    assert event_types(queue, task_id).count("task.completed") == 1


def test_task_that_keeps_stalling_fails_with_a_reason(clocked_queue, fixed_clock, redis_client):
    queue = clocked_queue
    assert queue.settings.max_stalls == 3
    task_id = queue.submit_task(Task(task_type="x"))
    for stall in range(1, 4):
        claim(queue)
        fixed_clock.advance(2)
        assert queue.reap_expired_leases() == (1, 0)
        assert_consistent(redis_client, queue.keys, task_id, "pending")
        assert queue.get_task(task_id)["stalls"] == stall
    claim(queue)
    fixed_clock.advance(2)
    assert queue.reap_expired_leases() == (0, 1)
    assert_consistent(redis_client, queue.keys, task_id, "failed")
    result = queue.get_task_result(task_id)
    assert result["status"] == "failed" and "stalled 4 times" in result["error"]
    assert "stalled" in queue.get_task(task_id)["error"]
    assert queue.get_queue_stats().failed_tasks == 1
    assert [t["task_id"] for t in queue.list_tasks(status="failed")] == [task_id]
    assert redis_client.pttl(queue.keys.task(task_id)) > 0


def test_stalled_task_waiter_gets_the_failure(fixed_clock, redis_url, namespace):
    no_stalls = Settings.from_mapping({}, heartbeat_interval=0.2, lease_timeout=1.0, max_stalls=0)
    client = connect(redis_url)
    try:
        queue = TaskQueue(client, settings=no_stalls, namespace=namespace, clock=fixed_clock)
        task_id = queue.submit_task(Task(task_type="x"))
        claim(queue)
        got = {}
        waiter = threading.Thread(target=lambda: got.update(doc=queue.wait_for_result(task_id, 5)))
        waiter.start()
        wait_for_waiter(queue, task_id)
        fixed_clock.advance(2)
        assert queue.reap_expired_leases() == (0, 1)
        waiter.join(5)
        assert got["doc"]["status"] == "failed" and "stalled" in got["doc"]["error"]
    finally:
        client.close()


def test_heartbeat_renews_the_lease(clocked_queue, fixed_clock, redis_client):
    queue = clocked_queue
    task_id = queue.submit_task(Task(task_type="x"))
    (_, token), = claim(queue, "worker-hhhhhhhh")
    for _ in range(5):                     # 4 s of work, kept alive by beats 0.8 s apart
        fixed_clock.advance(0.8)
        assert queue.store.heartbeat("worker-hhhhhhhh", {"state": "running"}, [(task_id, token)]) == []
        assert queue.reap_expired_leases() == (0, 0)
    assert redis_client.zscore(queue.keys.leases, task_id) == fixed_clock.ms + 1000
    fixed_clock.advance(0.8)
    assert queue.reap_expired_leases() == (0, 0)
    assert_consistent(redis_client, queue.keys, task_id, "running")
    fixed_clock.advance(0.3)              # 1.1 s since the last beat
    assert queue.reap_expired_leases() == (1, 0)


def test_heartbeat_reports_tasks_no_longer_held(clocked_queue):
    queue = clocked_queue
    cancelled = queue.submit_task(Task(task_type="x"))
    requeued = queue.submit_task(Task(task_type="x"))
    held = claim(queue, "worker-cccccccc", count=2)
    queue.cancel_task(cancelled)
    queue.requeue_task(requeued)
    lost = queue.store.heartbeat("worker-cccccccc", {}, [*held, ("0" * 32, "1")])
    assert dict(zip(lost[::2], lost[1::2])) == {cancelled: "cancelled", requeued: "pending",
                                                "0" * 32: "missing"}


def test_reap_marks_silent_workers_lost(clocked_queue, fixed_clock, redis_client):
    queue = clocked_queue
    queue.store.heartbeat("worker-dddddddd", {"state": "running"}, [])
    fixed_clock.advance(0.5)
    assert queue.store.reap(1000)[2] == 0
    fixed_clock.advance(1)
    assert queue.store.reap(1000)[2] == 1
    assert redis_client.zscore(queue.keys.workers, "worker-dddddddd") is None
    assert redis_client.hget(queue.keys.worker("worker-dddddddd"), "state") == "lost"
    lost = [e for e in queue.read_events() if e["type"] == "worker.lost"]
    assert [e["data"]["worker_id"] for e in lost] == ["worker-dddddddd"]


def test_release_hands_tasks_back_to_the_front_in_order(queue, redis_client):
    first, second, third = queue.submit_tasks([Task(task_type="x") for _ in range(3)])
    held = claim(queue, count=2)
    assert [task_id for task_id, _ in held] == [first, second]
    assert queue.store.release(held) == 2
    assert redis_client.lrange(queue.keys.queue("normal"), 0, -1) == [first, second, third]
    for task_id in (first, second):
        assert_consistent(redis_client, queue.keys, task_id, "pending")
        assert queue.get_task(task_id)["attempts"] == 0
    assert queue.store.release(held) == 0       # stale now: nothing happens twice


def test_worker_heartbeat_thread_reaps_for_everyone(redis_url, namespace, settings, make_worker):
    """A live worker's heartbeat loop recovers a dead worker's task without a scheduler."""
    client = connect(redis_url)
    queue = TaskQueue(client, settings=settings, namespace=namespace)
    try:
        task_id = queue.submit_task(Task(task_type="x"))
        claim(queue, "worker-deadbeef")          # a worker that then dies silently
        done = threading.Event()

        def run(task):
            done.set()
            return "rescued"

        worker = make_worker(queue=queue, handlers={"x": run})
        thread = threading.Thread(target=worker.start)
        thread.start()
        try:
            assert done.wait(5), "the lease (1 s) should expire and the task be rerun"
        finally:
            worker.stop()
            thread.join(10)
        assert queue.get_task_result(task_id)["result"] == "rescued"
    finally:
        client.close()
