"""Random corruption of a busy queue, drained by real worker processes.

A few thousand tasks, then random fields of random task hashes overwritten with values no
code writes, fields deleted, task keys replaced by keys of another type, and index entries
that point nowhere (ghost ids in queue lists, the scheduled set, leases, status indexes and
``routed``). Three ``worker.py`` processes drain it. The promise checked: every task that was
not touched completes, every corrupted one is dead-lettered with a reason naming its field,
no worker exits, every index agrees with its task (tests/support/indexes.py), no ghost
is left, and every console page draws.
"""
from __future__ import annotations

import random
import signal

from console.testing import page_exceptions
from engine import Task, TaskQueue
from engine.keys import PRIORITY_NAMES
from tests.support.indexes import assert_consistent
from tests.support.processes import WorkerProcess, worker_env
from tests.support.steps import wait_until

TASKS = 3000
CORRUPTED = 90
SEED = 20261130

# What a corruption writes, and the words its dead letter's reason must hold.
FIELD_DAMAGE = [
    (("hset", "attempt", "xyz"), "attempt"),
    (("hset", "attempt", "-1"), "attempt"),
    (("hset", "created_at", "tomorrow"), "created_at"),
    (("hdel", "created_at"), "created_at"),
    (("hset", "fence", "1e9"), "fence"),
    (("hset", "enqueued_at", "NaN"), "enqueued_at"),
    (("hset", "priority", "high"), "priority"),
    (("hdel", "priority"), "priority"),
    (("hset", "max_retries", "3.0"), "max_retries"),
    (("hdel", "max_retries"), "max_retries"),
    (("hset", "status", "sleeping"), "status"),
    (("hdel", "status"), "status"),
    (("hdel", "type"), "type"),
    (("hset", "payload", "{\"unterminated\": "), "payload"),
    (("hset", "payload", "\"a string\""), "payload"),
    (("hdel", "payload"), "payload"),
    (("hset", "timeout", "soon"), "timeout"),
    (("hset", "retry_delay", "-5"), "retry_delay"),
    (("hset", "backoff", "random"), "backoff"),
    (("type", "string"), "key type"),
    (("type", "list"), "key type"),
]


def corrupt(queue: TaskQueue, task_id: str, damage: tuple) -> None:
    key = queue.keys.task(task_id)
    verb, *args = damage
    if verb == "hset":
        queue.client.hset(key, args[0], args[1])
    elif verb == "hdel":
        queue.client.hdel(key, args[0])
    elif args[0] == "string":
        queue.client.delete(key)
        queue.client.set(key, "not a task")
    else:
        queue.client.delete(key)
        queue.client.rpush(key, "not", "a", "task")


def plant_ghosts(queue: TaskQueue) -> list[str]:
    """Index entries for ids that have no record, in every index a worker reads."""
    k, ghosts = queue.keys, [f"ghost-{i}" for i in range(12)]
    for i, ghost in enumerate(ghosts[:4]):
        queue.client.rpush(k.queue(PRIORITY_NAMES[i % 4]), ghost)
        queue.client.zadd(k.status["pending"], {ghost: 1})
    queue.client.zadd(k.scheduled, {ghosts[4]: 1, ghosts[5]: 2})
    queue.client.zadd(k.status["scheduled"], {ghosts[4]: 1})
    queue.client.zadd(k.leases, {ghosts[6]: 1, ghosts[7]: 1})
    queue.client.zadd(k.status["running"], {ghosts[6]: 1})
    queue.client.rpush(k.routed, ghosts[8])
    return ghosts


def test_a_corrupted_queue_drains_with_every_good_task_done_and_every_bad_one_explained(
        queue, redis_url, namespace):
    rng = random.Random(SEED)
    tasks = [Task(task_type="echo", payload={"i": i}, priority=rng.choice(PRIORITY_NAMES),
                  delay=0.5 if i % 10 == 0 else None, max_retries=1)
             for i in range(TASKS)]
    ids = queue.submit_tasks(tasks)
    bad = dict(zip(rng.sample(ids, CORRUPTED), (rng.choice(FIELD_DAMAGE) for _ in range(CORRUPTED))))
    for task_id, (damage, _) in bad.items():
        corrupt(queue, task_id, damage)
    plant_ghosts(queue)
    good = [task_id for task_id in ids if task_id not in bad]

    env = worker_env(redis_url, namespace)
    workers = [WorkerProcess(env, "--concurrency", str(n)) for n in (1, 4, 8)]
    try:
        for worker in workers:
            worker.wait_for_line(r"ready", timeout=20)
        for task_id in good:
            result = queue.wait_for_result(task_id, timeout=60)
            assert result["status"] == "completed", (task_id, result)
        assert all(worker.proc.poll() is None for worker in workers), [w.output() for w in workers]
        wait_until(lambda: queue.client.zcard(queue.keys.leases) == 0, timeout=10,
                   what="the reaper to drop the ghost leases")
        for worker in workers:          # still running after all that, and stopping cleanly
            worker.signal(signal.SIGTERM)
        assert [worker.wait(20) for worker in workers] == [0, 0, 0]
    finally:
        for worker in workers:
            worker.close()

    for task_id, (damage, field) in bad.items():
        error = queue.client.hget(queue.keys.task(task_id), "error") or ""
        assert error.startswith("corrupt record: ") and field in error, (task_id, damage, error)
        assert_consistent(queue.client, queue.keys, task_id, expected="failed")
    for task_id in good:
        assert_consistent(queue.client, queue.keys, task_id, expected="completed")
    stats = queue.get_queue_stats()
    assert (stats.pending_tasks, stats.running_tasks, stats.routed_tasks) == (0, 0, 0)
    assert sum(stats.depth_by_priority.values()) == 0
    assert stats.failed_tasks == CORRUPTED and stats.completed_tasks == len(good)
    assert queue.client.zcard(queue.keys.scheduled) == 0

    problems = page_exceptions(redis_url, namespace, task_ids=list(bad)[:5] + good[:1])
    assert problems == []
