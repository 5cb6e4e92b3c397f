"""Redis answers but refuses to write: out of memory, a read-only replica, a failed snapshot.

These are outages of a kind: a submit gets a clear :class:`RedisRefused` and writes nothing;
a worker neither dies nor drops what it holds, and carries on when Redis writes again. Each
test runs on a private redis-server of its own, since it reconfigures the server.
"""
from __future__ import annotations

import logging
import threading

import pytest
import redis

from engine import QueueUnavailable, RedisRefused, Task, TaskWorker
from engine.errors import refusal
from redis._parsers.base import BaseParser
from tests.support.steps import wait_until


def out_of_memory(admin: redis.Redis) -> None:
    """Every write is over the limit from now on (noeviction: Redis refuses, drops nothing)."""
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")


def test_a_submit_to_a_full_redis_is_refused_clearly_and_writes_nothing(private_queue):
    queue, admin = private_queue
    kept = queue.submit_task(Task(task_type="t"))
    keys_before = admin.dbsize()
    out_of_memory(admin)
    with pytest.raises(RedisRefused, match="out of memory") as info:
        queue.submit_task(Task(task_type="t", payload={"n": 1}))
    assert isinstance(info.value, QueueUnavailable)     # callers that handle outages handle this
    with pytest.raises(RedisRefused, match="out of memory"):
        queue.submit_tasks([Task(task_type="t") for _ in range(3)])
    assert admin.dbsize() == keys_before
    admin.config_set("maxmemory", "0")
    after = queue.submit_task(Task(task_type="t"))
    assert queue.count_tasks("pending") == 2 and {kept, after} <= set(queue.store.client.lrange(
        queue.keys.queues[2], 0, -1))


def test_a_replica_refuses_then_the_same_queue_writes_once_it_is_primary_again(private_queue):
    queue, admin = private_queue
    admin.replicaof("127.0.0.1", "1")          # nothing listens there: a replica for good
    with pytest.raises(RedisRefused, match="read-only replica"):
        queue.submit_task(Task(task_type="t"))
    admin.replicaof("no", "one")               # what a failover does to the new primary
    task_id = queue.submit_task(Task(task_type="t"))
    assert queue.get_task_status(task_id)["status"] == "pending"


def test_a_worker_waits_out_a_full_redis_and_then_finishes_the_work(private_queue, caplog):
    queue, admin = private_queue
    ids = queue.submit_tasks([Task(task_type="echo", payload={"i": i}) for i in range(3)])
    out_of_memory(admin)
    worker = TaskWorker(queue, handlers={"echo": lambda task: task.payload})
    caplog.set_level(logging.WARNING, logger="engine.worker")
    thread = threading.Thread(target=worker.start)
    thread.start()
    try:
        wait_until(lambda: any("out of memory" in r.getMessage() for r in caplog.records),
                   timeout=10, what="the worker to report the refusal")
        assert thread.is_alive()
        assert queue.count_tasks("pending") == 3                # nothing claimed, nothing lost
        admin.config_set("maxmemory", "0")
        results = [queue.wait_for_result(task_id, timeout=15) for task_id in ids]
        assert [r["result"] for r in results] == [{"i": i} for i in range(3)]
    finally:
        admin.config_set("maxmemory", "0")
        worker.stop()
        thread.join(15)
    assert not thread.is_alive()
    assert worker.stats["processed"] == 3


@pytest.mark.parametrize(("reply", "says"), [
    ("OOM command not allowed when used memory > 'maxmemory'.", "out of memory"),
    ("READONLY You can't write against a read only replica.", "read-only replica"),
    ("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to "
     "persist to disk.", "cannot save"),
    ("BUSY Redis is busy running a script.", "busy"),
    ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
     "lost its master"),
])
def test_passing_refusals_are_told_apart_by_their_code(reply, says):
    # Parsed as redis-py parses an error reply: some codes become their own classes
    # (their message loses the code), the others stay in the message.
    assert says in str(refusal(BaseParser.parse_error(reply)))


@pytest.mark.parametrize("reply", [
    "ERR Error running script: user_script:3: attempt to index a nil value",
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "NOSCRIPT No matching script. Please use EVAL.",
])
def test_bugs_are_not_refusals(reply):
    assert refusal(BaseParser.parse_error(reply)) is None
    assert refusal(redis.ConnectionError("Connection refused")) is None   # an outage, not a refusal
