"""``async def`` handlers: run on the worker's event loop, side by side with plain ones,
from the same slots, reported through the same writer (engine/async_runner.py)."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest

from engine import Task
from engine.async_runner import AsyncRunner
from engine.errors import ValidationError
from engine.runners import InlineRunner, ThreadRunner
from tests.support.processes import REPO_ROOT
from tests.support.steps import wait_until


async def async_double(task):
    await asyncio.sleep(0)
    return {"double": task.payload["n"] * 2, "thread": threading.current_thread().name}


def plain_echo(task):
    return {"echo": task.payload["n"], "thread": threading.current_thread().name}


def test_a_worker_runs_async_and_plain_handlers_side_by_side(queue, make_worker):
    worker = make_worker(concurrency=8)
    worker.register_handler("double", async_double)
    worker.register_handler("echo", plain_echo)
    doubles = [queue.submit_task(Task(task_type="double", payload={"n": i})) for i in range(20)]
    echoes = [queue.submit_task(Task(task_type="echo", payload={"n": i})) for i in range(5)]
    stats = worker.start(burst=True)
    assert isinstance(worker.runner, AsyncRunner)
    assert stats["processed"] == 25 and stats["failed"] == 0
    results = [queue.get_task_result(t)["result"] for t in doubles]
    assert [r["double"] for r in results] == [i * 2 for i in range(20)]
    assert {r["thread"] for r in results} == {f"{worker.worker_id}-loop1"}   # one loop thread
    plain = [queue.get_task_result(t)["result"] for t in echoes]
    assert [r["echo"] for r in plain] == list(range(5))
    assert all(r["thread"] == f"{worker.worker_id}-task" for r in plain)


def test_async_slots_bound_the_handlers_in_flight(queue, make_worker):
    worker = make_worker(concurrency=5)
    state = {"now": 0, "most": 0}

    async def count(task):
        state["now"] += 1
        state["most"] = max(state["most"], state["now"])
        await asyncio.sleep(0.02)
        state["now"] -= 1
        return None
    worker.register_handler("count", count)
    for _ in range(30):
        queue.submit_task(Task(task_type="count"))
    assert worker.start(burst=True)["processed"] == 30
    assert state["most"] == 5


def test_an_async_handler_that_raises_fails_its_task_with_the_error(queue, make_worker):
    async def broken(task):
        await asyncio.sleep(0)
        raise ValueError("no good")
    worker = make_worker(concurrency=2)
    worker.register_handler("broken", broken)
    task_id = queue.submit_task(Task(task_type="broken", max_retries=0))
    assert worker.start(burst=True)["failed"] == 1
    result = queue.get_task_result(task_id)
    assert result["error"] == "ValueError: no good" and result["reason"] == "error"


def test_process_one_runs_an_async_handler(queue, make_worker):
    worker = make_worker()
    worker.register_handler("double", async_double)
    task_id = queue.submit_task(Task(task_type="double", payload={"n": 4}))
    assert worker.process_one()
    assert queue.get_task_result(task_id)["result"]["double"] == 8


def test_the_runner_follows_the_handlers(make_worker):
    assert isinstance(make_worker()._new_runner(), InlineRunner)
    assert isinstance(make_worker(concurrency=3)._new_runner(), ThreadRunner)
    worker = make_worker()
    worker.register_handler("double", async_double)
    assert isinstance(worker._new_runner(), AsyncRunner)


def test_a_handler_timeout_must_be_a_positive_number(make_worker):
    worker = make_worker()
    for bad in (0, -1, "5", float("nan")):
        with pytest.raises(ValidationError, match="timeout"):
            worker.register_handler("x", plain_echo, timeout=bad)
    assert "x" not in worker.handler_types


def test_a_task_the_heartbeat_finds_gone_has_its_coroutine_cancelled(queue, make_worker):
    started, stopped = threading.Event(), threading.Event()

    async def long_call(task):
        if started.is_set():
            return "run again"      # the requeued task, claimed again: done at once
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.set()
            raise
    # One slot (still the event loop: the handler is async def), so the requeued task is
    # not claimed again by this worker; the heartbeat beats only when told.
    worker = make_worker(concurrency=1, heartbeat_interval=3600)
    worker.register_handler("long_call", long_call)
    task_id = queue.submit_task(Task(task_type="long_call"))
    thread = threading.Thread(target=worker.start)
    thread.start()
    try:
        assert started.wait(10)
        queue.requeue_task(task_id)          # no cancel message: only the heartbeat can tell
        assert not stopped.wait(0.2)
        worker.beat()
        assert stopped.wait(5)
        assert worker.in_flight == 0
    finally:
        worker.stop()
        thread.join(10)
    assert queue.get_task_status(task_id)["status"] in ("pending", "completed")


def test_abort_cancels_the_coroutines_and_hands_their_tasks_back(queue, make_worker):
    started = threading.Event()
    cancelled = []

    async def long_call(task):
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(task.task_id)
            raise
    worker = make_worker(concurrency=3)
    worker.register_handler("long_call", long_call)
    ids = [queue.submit_task(Task(task_type="long_call")) for _ in range(2)]
    thread = threading.Thread(target=worker.start)
    thread.start()
    assert started.wait(10)
    wait_until(lambda: queue.get_queue_stats().running_tasks == 2, what="both running")
    worker.abort()
    thread.join(10)
    assert not thread.is_alive()
    assert sorted(cancelled) == sorted(ids)
    assert [queue.get_task_status(t)["status"] for t in ids] == ["pending", "pending"]


def test_the_worker_cli_makes_room_for_a_socket_per_slot():
    # In a child process: the limit it changes is the process's own.
    code = ("import resource, worker\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
            "worker.raise_open_file_limit(1000)\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "print(soft >= min(2256, hard) if hard != resource.RLIM_INFINITY else soft >= 2256)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "True"
