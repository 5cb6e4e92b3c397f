"""Cancel in flight: ``cancel_task`` on a running task reaches its worker process through
pub/sub (engine/cancels.py), not at its next heartbeat, which these workers are given
only every 30 s: an ``async def`` handler is cancelled, a plain one sees
``task.context.cancelled``, the slot and the lease are freed at once, and the task keeps
who cancelled it and why."""
from __future__ import annotations

import time

import pytest

from engine import Task
from engine.access import Identity, Role
from tests.support.long_workers import long_workers  # noqa: F401 (fixture)
from tests.support.steps import wait_until

SLOW_HEARTBEAT = {"QUEUE_HEARTBEAT_INTERVAL": "30", "QUEUE_LEASE_TIMEOUT": "120"}


@pytest.fixture
def spawn(long_workers):
    def start(*args: str, **env: str):
        return long_workers(*args, env={**SLOW_HEARTBEAT, **env})
    return start


def started_task(queue, tmp_path, task_type: str, name: str = "t") -> tuple[str, dict]:
    files = {"started_file": str(tmp_path / f"{name}.started"),
             "seen_file": str(tmp_path / f"{name}.seen")}
    task_id = queue.submit_task(Task(task_type=task_type, payload=files))
    wait_until(lambda: (tmp_path / f"{name}.started").exists(), timeout=10,
               what="the handler to start")
    return task_id, files


def seen_within(path: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            text = open(path).read()
            if text:
                return text
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"the handler did not hear of the cancel within {seconds} s")


def completes(queue, task_type: str = "echo") -> None:
    task_id = queue.submit_task(Task(task_type=task_type, payload={"n": 1}))
    wait_until(lambda: queue.get_task_status(task_id)["status"] == "completed", timeout=10,
               what="the next task to complete in the freed slot")


def test_a_plain_handler_sees_the_cancel_within_a_second(spawn, queue, redis_client, tmp_path):
    spawn("--concurrency", "2").worker_id
    task_id, files = started_task(queue, tmp_path, "until_cancelled")
    assert queue.cancel_task(task_id, reason="the user closed the chat", by="alice") == "running"
    assert float(seen_within(files["seen_file"], 1.0)) > 0
    record = redis_client.hgetall(queue.keys.task(task_id))
    assert (record["status"], record["reason"], record["cancelled_by"], record["cancel_reason"]) == (
        "cancelled", "cancelled", "alice", "the user closed the chat")
    assert redis_client.zscore(queue.keys.leases, task_id) is None
    result = queue.get_task_result(task_id)
    assert (result["status"], result["error"], result["cancelled_by"]) == (
        "cancelled", "the user closed the chat", "alice")


def test_an_async_handler_is_cancelled_and_its_only_slot_freed(spawn, queue, tmp_path):
    spawn("--concurrency", "1", TEST_ASYNC_HANDLERS="1").worker_id
    task_id, files = started_task(queue, tmp_path, "async_hang")
    queue.cancel_task(task_id)
    assert seen_within(files["seen_file"], 1.0) == "cancelled"
    completes(queue)       # the worker's one slot was freed: the next task runs


def test_a_plain_handler_that_never_returns_gives_its_slot_back(spawn, queue, tmp_path):
    spawn("--concurrency", "2").worker_id
    first, _ = started_task(queue, tmp_path, "hang", "first")
    started_task(queue, tmp_path, "hang", "second")       # both slots now held for ever
    queue.cancel_task(first)
    completes(queue)


def test_a_guarded_queue_records_who_cancelled(spawn, queue, redis_client, tmp_path):
    spawn("--concurrency", "2").worker_id
    task_id, files = started_task(queue, tmp_path, "until_cancelled")
    queue.acting_as(Identity("bob", Role.OPERATOR)).cancel_task(task_id, reason="wrong query")
    seen_within(files["seen_file"], 1.0)
    assert redis_client.hget(queue.keys.task(task_id), "cancelled_by") == "bob"
