"""Corrupt records and hostile moments: nothing strands a task or stops a worker.

Each test here failed on the engine before records were checked in the scripts: one bad
field made claim.lua stop half-way through a popped batch (Redis does not roll a script
back), leaving good tasks running with no lease or pending in no list, and the worker died.
"""
from __future__ import annotations

import json
import logging
import threading

import pytest
import redis

from engine import RedisRefused, Task, TaskQueue, TaskWorker, clock as engine_clock
from engine.batch import child_ids
from engine.errors import CorruptRecord, IdempotencyConflict
from tests.support.indexes import assert_consistent
from tests.support.steps import claim, wait_until

# (field, value) written over one task's hash, and the field the dead letter must name:
# what claim.lua computes with, checked in the script.
CORRUPTIONS = [
    ("attempt", "xyz", "attempt"),
    ("attempt", "1.5", "attempt"),
    ("fence", "-3", "fence"),
    ("enqueued_at", "soon", "enqueued_at"),
    ("priority", "7", "priority"),
    ("status", "limbo", "status"),
]


def dead_letter(queue: TaskQueue, task_id: str) -> str:
    """The error of a task that must have been dead-lettered (its index state checked)."""
    assert_consistent(queue.client, queue.keys, task_id, expected="failed")
    return queue.client.hget(queue.keys.task(task_id), "error")


def all_events_are_json(queue: TaskQueue) -> list[dict]:
    """Every stored event parses (the stream holds one JSON value per entry)."""
    events = []
    for _, fields in queue.client.xrange(queue.keys.events_log):
        value = json.loads(fields["e"])
        events.extend(value if isinstance(value, list) else [value])
    return events


@pytest.mark.parametrize(("field", "value", "named"), CORRUPTIONS)
def test_one_corrupt_record_is_dead_lettered_and_the_rest_of_the_batch_is_claimed(queue, field, value, named):
    ids = queue.submit_tasks([Task(task_type="t", payload={"i": i}) for i in range(50)])
    bad = ids[20]
    queue.client.hset(queue.keys.task(bad), field, value)
    claimed = claim(queue, count=100)
    assert {task_id for task_id, _ in claimed} == set(ids) - {bad}
    assert dead_letter(queue, bad) == f"corrupt record: {named}"
    for task_id in set(ids) - {bad}:
        assert_consistent(queue.client, queue.keys, task_id, expected="running")
    assert queue.get_task_result(bad)["error"] == f"corrupt record: {named}"
    assert queue.get_queue_stats().failed_tasks == 1
    assert any(e["type"] == "task.failed" and e["data"]["task_id"] == bad
               for e in all_events_are_json(queue))


def test_a_missing_field_and_a_key_of_another_type_are_dead_lettered(queue):
    ids = queue.submit_tasks([Task(task_type="t") for _ in range(10)])
    queue.client.hdel(queue.keys.task(ids[3]), "type")
    queue.client.delete(queue.keys.task(ids[6]))
    queue.client.set(queue.keys.task(ids[6]), "not a hash")
    claimed = {task_id for task_id, _ in claim(queue, count=20)}
    assert claimed == set(ids) - {ids[3], ids[6]}
    assert dead_letter(queue, ids[3]) == "corrupt record: type"
    assert dead_letter(queue, ids[6]) == "corrupt record: key type"
    assert queue.client.type(queue.keys.task(ids[6])) == "hash"   # a failed record took its place


def test_a_ghost_id_is_skipped_and_its_pending_entry_goes_too(queue):
    real = queue.submit_task(Task(task_type="t"))
    queue.client.rpush(queue.keys.queues[2], "ghost-1")
    queue.client.zadd(queue.keys.status["pending"], {"ghost-1": 1})
    assert queue.get_queue_stats().pending_tasks == 2
    assert [task_id for task_id, _ in claim(queue, count=5)] == [real]
    assert queue.get_queue_stats().pending_tasks == 0
    assert queue.client.exists(queue.keys.task("ghost-1")) == 0


# What only the worker parses, checked by the worker (engine/worker.py: running_task).
@pytest.mark.parametrize(("field", "value", "error"), [
    ("payload", "{not json", "corrupt record: payload (not a JSON object)"),
    ("payload", "[1, 2]", "corrupt record: payload (not a JSON object)"),
    ("timeout", "abc", "corrupt record: timeout (not a number of seconds > 0)"),
    ("timeout", "nan", "corrupt record: timeout (not a number of seconds > 0)"),
    ("max_retries", "lots", "corrupt record: max_retries"),
    ("created_at", "yesterday", "corrupt record: created_at"),
    ("retry_delay", "1e3", "corrupt record: retry_delay"),
    ("max_retry_delay", "-1", "corrupt record: max_retry_delay"),
    ("backoff", "sideways", "corrupt record: backoff"),
])
def test_a_record_the_worker_cannot_parse_is_dead_lettered_and_the_worker_goes_on(
        queue, make_worker, field, value, error):
    ids = queue.submit_tasks([Task(task_type="t", payload={"i": i}) for i in range(30)])
    queue.client.hset(queue.keys.task(ids[5]), field, value)
    ran = []
    worker = make_worker(handlers={"t": lambda task: ran.append(task.payload["i"])})
    stats = worker.start(burst=True)
    assert sorted(ran) == [i for i in range(30) if i != 5]
    assert stats["processed"] == 29 and stats["failed"] == 1
    assert dead_letter(queue, ids[5]) == error
    assert queue.client.hget(queue.keys.task(ids[5]), "attempt") == "1"   # no retry for it


def test_a_threaded_worker_dead_letters_an_unparsable_record_too(queue, make_worker):
    ids = queue.submit_tasks([Task(task_type="t", payload={"i": i}) for i in range(20)])
    queue.client.hset(queue.keys.task(ids[0]), "payload", "\x00garbage")
    worker = make_worker(concurrency=4, handlers={"t": lambda task: task.payload["i"]})
    stats = worker.start(burst=True)
    assert stats["processed"] == 19 and stats["failed"] == 1
    assert dead_letter(queue, ids[0]).startswith("corrupt record: payload")


def test_promote_dead_letters_a_corrupt_scheduled_record_and_moves_the_rest(clocked_queue, fixed_clock):
    queue = clocked_queue
    ids = queue.submit_tasks([Task(task_type="t", delay=5) for _ in range(4)])
    queue.client.hset(queue.keys.task(ids[1]), "priority", "urgentish")
    queue.client.hset(queue.keys.task(ids[2]), "status", "half-done")
    queue.client.zadd(queue.keys.scheduled, {"ghost-2": 0})
    fixed_clock.advance(6)
    assert queue.promote_due() == 2
    for task_id in (ids[0], ids[3]):
        assert_consistent(queue.client, queue.keys, task_id, expected="pending")
    assert dead_letter(queue, ids[1]) == "corrupt record: priority"
    assert dead_letter(queue, ids[2]) == "corrupt record: status"
    assert queue.client.zscore(queue.keys.scheduled, "ghost-2") is None


def test_the_reaper_recovers_a_mass_crash_in_one_pass(clocked_queue, fixed_clock):
    queue = clocked_queue
    ids = queue.submit_tasks([Task(task_type="t") for _ in range(1200)])
    assert len(claim(queue, count=1200)) == 1200          # a worker took them all, then died
    queue.client.hset(queue.keys.task(ids[7]), "attempt", "x")
    queue.client.hset(queue.keys.task(ids[8]), "worker", 'quote"and\\backslash')
    fixed_clock.advance(queue.settings.lease_timeout + 1)
    requeued, failed = queue.reap_expired_leases()
    assert (requeued, failed) == (1199, 1)
    assert queue.client.zcard(queue.keys.leases) == 0
    assert queue.count_tasks("pending") == 1199
    assert dead_letter(queue, ids[7]) == "corrupt record: attempt"
    reaped = [e for e in all_events_are_json(queue) if e["data"].get("task_id") == ids[8]]
    assert reaped[-1]["data"]["worker_id"] == 'quote"and\\backslash'


def test_verbs_on_a_key_of_another_type_say_so_and_delete_clears_it(queue):
    task_id = queue.submit_task(Task(task_type="t"))
    queue.client.delete(queue.keys.task(task_id))
    queue.client.sadd(queue.keys.task(task_id), "x")
    for verb in (queue.cancel_task, queue.retry_task, queue.requeue_task):
        with pytest.raises(CorruptRecord, match="delete it"):
            verb(task_id)
    assert queue.delete_task(task_id)
    assert queue.client.exists(queue.keys.task(task_id)) == 0


def test_a_corrupt_batch_parent_does_not_stop_its_children(queue, make_worker):
    parent = queue.submit_task(Task(task_type="batch_query", payload={"queries": ["a", "b", "c"]}))
    queue.client.hset(queue.keys.task(parent), "n_completed", "many")
    worker = make_worker(handlers={"agent_query": lambda task: task.payload["query"]})
    assert worker.start(burst=True)["processed"] == 3
    assert queue.client.hget(queue.keys.task(parent), "n_completed") == "many"
    all_events_are_json(queue)


# -- outages ---------------------------------------------------------------------------------
def test_the_reconnect_line_gives_the_length_of_the_outage(queue, make_worker, caplog, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(engine_clock, "monotonic", lambda: now[0])
    queue.submit_tasks([Task(task_type="t") for _ in range(40)])

    def slow(task):            # each task takes a (fake) second: the queue stays busy for 40 s
        now[0] += 1.0

    worker = make_worker(handlers={"t": slow})
    real_claim, calls = worker.store.claim, []

    def flaky_claim(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise redis.ConnectionError("connection refused")
        if len(calls) == 2:
            now[0] += 2.5      # Redis answered again 2.5 s after the first refusal
        return real_claim(*args, **kwargs)

    worker.store.claim = flaky_claim
    caplog.set_level(logging.WARNING, logger="engine.worker")
    assert worker.start(burst=True)["processed"] == 40
    lines = [r.getMessage() for r in caplog.records if "reconnected" in r.getMessage()]
    assert len(lines) == 1 and lines[0].endswith("after 2.5 s"), lines


def test_a_worker_stops_claiming_while_redis_refuses_its_results(private_queue, caplog):
    queue, admin = private_queue
    ids = queue.submit_tasks([Task(task_type="t", payload={"i": i}) for i in range(400)])
    gate, started = threading.Event(), threading.Semaphore(0)

    def held(task):
        started.release()
        gate.wait(10)
        return task.payload["i"]

    worker = TaskWorker(queue, concurrency=4, handlers={"t": held})
    caplog.set_level(logging.WARNING, logger="engine.worker")
    thread = threading.Thread(target=worker.start)
    thread.start()
    try:
        for _ in range(4):
            assert started.acquire(timeout=10)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")             # every write refused from now on
        gate.set()
        wait_until(lambda: any("out of memory" in r.getMessage() for r in caplog.records),
                   timeout=10, what="the refusal to reach the worker")
        # Claims are allowed when Redis is full (LPOP frees memory); the worker must not
        # take more work than its four slots while its results cannot be written.
        pending_then = queue.count_tasks("pending")
        for _ in range(5):
            threading.Event().wait(0.2)   # let the worker loop run
            assert queue.count_tasks("pending") == pending_then
        assert pending_then >= 400 - 8
        admin.config_set("maxmemory", "0")
        results = [queue.wait_for_result(task_id, timeout=30) for task_id in ids]
        assert sorted(r["result"] for r in results) == list(range(400))
    finally:
        gate.set()
        admin.config_set("maxmemory", "0")
        worker.stop()
        thread.join(20)
    assert not thread.is_alive()


def test_a_batch_refused_half_way_leaves_nothing_and_can_be_submitted_again(private_queue):
    queue, admin = private_queue
    admin.config_set("maxmemory-policy", "noeviction")
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", str(used + 400_000))   # room for a few chunks, not 3,000 children
    batch = Task(task_type="batch_query", payload={"queries": [f"q{i} " + "x" * 200 for i in range(3000)]},
                 idempotency_key="upload-7")
    with pytest.raises(RedisRefused):
        queue.submit_task(batch)
    admin.config_set("maxmemory", "0")
    # Nothing of it is left: no parent, no child, no index entry, no idempotency key.
    assert queue.client.exists(queue.keys.task(batch.task_id)) == 0
    assert queue.client.exists(queue.keys.idempotency("upload-7")) == 0
    stats = queue.get_queue_stats()
    assert (stats.pending_tasks, stats.running_tasks, stats.submitted_tasks) == (0, 0, 0)
    assert queue.client.llen(queue.keys.queues[2]) == 0
    # The same Task again goes in whole.
    assert queue.submit_task(batch) == batch.task_id
    assert len(child_ids(queue, batch.task_id)) == 3000
    assert queue.get_task_status(batch.task_id)["status"] == "running"
    assert queue.get_queue_stats().pending_tasks == 3000


def test_a_batch_left_staged_by_a_failed_submit_is_invisible_and_replaced(queue, monkeypatch):
    batch = Task(task_type="batch_query", payload={"queries": ["a", "b", "c"]})
    real_open = queue.store.open_batch

    def cut_off(*args, **kwargs):
        raise redis.ConnectionError("dropped")

    monkeypatch.setattr(queue.store, "open_batch", cut_off)
    monkeypatch.setattr("engine.batch_submit._remove_quietly", lambda queue, parent_id: None)  # cut off too
    with pytest.raises(Exception):
        queue.submit_task(batch)
    assert queue.get_task_status(batch.task_id)["status"] == "staging"
    assert queue.client.zscore(queue.keys.status["running"], batch.task_id) is None
    monkeypatch.setattr(queue.store, "open_batch", real_open)
    assert queue.submit_task(batch) == batch.task_id
    assert len(child_ids(queue, batch.task_id)) == 3
    assert queue.get_queue_stats().pending_tasks == 3


def test_an_idempotency_key_reused_with_other_content_is_a_conflict(queue):
    first = queue.submit_task(Task(task_type="t", payload={"a": 1, "b": 2}, idempotency_key="k1"))
    # The same content (whatever the key order, priority or retry policy) is the same submit.
    assert queue.submit_task(Task(task_type="t", payload={"b": 2, "a": 1}, idempotency_key="k1",
                                  priority="high", max_retries=9)) == first
    keys_before = queue.client.dbsize()
    with pytest.raises(IdempotencyConflict) as info:
        queue.submit_task(Task(task_type="t", payload={"a": 2}, idempotency_key="k1"))
    assert info.value.existing_id == first and first in str(info.value)
    assert queue.client.dbsize() == keys_before
    with pytest.raises(IdempotencyConflict):
        queue.submit_task(Task(task_type="other", payload={"a": 1, "b": 2}, idempotency_key="k1"))
    batch = Task(task_type="batch_query", payload={"queries": ["x"]}, idempotency_key="k2")
    assert queue.submit_task(batch) == batch.task_id
    with pytest.raises(IdempotencyConflict) as info:
        queue.submit_task(Task(task_type="batch_query", payload={"queries": ["y"]}, idempotency_key="k2"))
    assert info.value.existing_id == batch.task_id


@pytest.mark.parametrize("value", ["²", "", "3 "])
def test_a_count_that_only_looks_like_digits_is_dead_lettered(queue, make_worker, value):
    task_id = queue.submit_task(Task(task_type="t"))
    queue.client.hset(queue.keys.task(task_id), "max_retries", value)
    worker = make_worker(handlers={"t": lambda task: None})
    assert worker.start(burst=True)["failed"] == 1
    assert dead_letter(queue, task_id) == "corrupt record: max_retries"


def test_a_task_cannot_name_someone_elses_batch_as_its_parent(queue, make_worker):
    batch = queue.submit_task(Task(task_type="batch_query", payload={"queries": ["a"]}))
    before = queue.client.dbsize()
    with pytest.raises(ValueError, match="parent_id"):
        queue.submit_task(Task(task_type="agent_query", payload={"query": "x"}, parent_id=batch))
    with pytest.raises(ValueError, match="parent_id"):
        queue.submit_tasks([Task(task_type="t"), Task(task_type="t", parent_id=batch)])
    assert queue.client.dbsize() == before
    assert queue.client.hget(queue.keys.task(batch), "total") == "1"


@pytest.mark.parametrize("timeout", [float("nan"), "5", -1, float("inf")])
def test_wait_for_result_refuses_a_timeout_that_is_no_number_of_seconds(queue, timeout):
    task_id = queue.submit_task(Task(task_type="t"))
    with pytest.raises(ValueError, match="timeout"):
        queue.wait_for_result(task_id, timeout=timeout)
