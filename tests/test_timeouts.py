"""Timeouts that hold: a task past its timeout ends with reason ``timeout`` (distinct from
an error) and is retried or failed per its policy; a plain handler that never returns is
abandoned, its slot freed for the next task (engine/runners.py, engine/async_runner.py)."""
from __future__ import annotations

import asyncio

import pytest

from engine import Task
from tests.support.long_workers import long_workers  # noqa: F401 (fixture)
from tests.support.steps import wait_until


@pytest.fixture
def spawn(long_workers):
    return long_workers


def ended(queue, task_id: str) -> bool:
    return queue.get_task_status(task_id)["status"] in ("completed", "failed", "cancelled")


@pytest.mark.parametrize("concurrency", ["1", "2"])
def test_a_thread_handler_that_never_returns_times_out_and_frees_its_slot(
        spawn, queue, redis_client, concurrency):
    worker = spawn("--concurrency", concurrency)
    hung = queue.submit_task(Task(task_type="hang", timeout=0.5, max_retries=1, retry_delay=0))
    wait_until(lambda: ended(queue, hung), timeout=15, what="the hung task to end")
    result = queue.get_task_result(hung)
    assert result["status"] == "failed" and result["reason"] == "timeout"
    assert result["attempts"] == 2                       # retried once, per its policy
    assert "timeout of 0.5 s" in result["error"]
    record = redis_client.hgetall(queue.keys.task(hung))
    assert record["reason"] == "timeout"
    # The threads that ran it never return: only the slots freed at the timeouts (a new
    # thread in each) let the next task run.
    echo = queue.submit_task(Task(task_type="echo", payload={"n": 1}))
    wait_until(lambda: ended(queue, echo), timeout=10, what="the next task")
    assert queue.get_task_result(echo)["status"] == "completed"
    assert redis_client.hget(queue.keys.task(echo), "reason") == "completed"
    worker.close()


def test_a_type_default_timeout_applies_to_tasks_that_name_none(spawn, queue):
    spawn("--concurrency", "3")
    task_id = queue.submit_task(Task(task_type="hang_half_second", max_retries=0))
    wait_until(lambda: ended(queue, task_id), timeout=10, what="the task to time out")
    assert queue.get_task_result(task_id)["reason"] == "timeout"


def test_an_async_handler_past_its_timeout_is_cancelled(queue, make_worker, tmp_path):
    seen = tmp_path / "seen"
    worker = make_worker(concurrency=4)

    async def slow(task):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.write_text("cancelled")
            raise
    worker.register_handler("slow", slow, timeout=0.2)
    task_id = queue.submit_task(Task(task_type="slow", max_retries=0))
    assert worker.start(burst=True)["failed"] == 1
    result = queue.get_task_result(task_id)
    assert result["reason"] == "timeout" and seen.read_text() == "cancelled"


def test_a_task_timeout_overrides_the_type_default(queue, make_worker):
    worker = make_worker(concurrency=2)

    async def nap(task):
        await asyncio.sleep(0.3)
        return "woke"
    worker.register_handler("nap", nap, timeout=0.1)
    long_enough = queue.submit_task(Task(task_type="nap", timeout=5))
    too_short = queue.submit_task(Task(task_type="nap", max_retries=0))
    worker.start(burst=True)
    assert queue.get_task_result(long_enough)["result"] == "woke"
    assert queue.get_task_result(too_short)["reason"] == "timeout"


def test_an_error_is_not_a_timeout(queue, make_worker):
    worker = make_worker()

    def broken(task):
        raise TimeoutError("the handler's own timeout, not the task's")
    worker.register_handler("broken", broken, timeout=5)
    task_id = queue.submit_task(Task(task_type="broken", max_retries=0))
    worker.start(burst=True)
    assert queue.get_task_result(task_id)["reason"] == "error"
