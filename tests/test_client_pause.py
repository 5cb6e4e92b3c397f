"""CLIENT PAUSE: Redis stops answering for a while without closing connections.

A pause shorter than the client's socket timeout only delays calls: the worker carries on
and a submit made during the pause returns once it ends. A pause longer than the timeout
is an outage to the caller (QueueUnavailable), but the command already sent runs when the
pause ends: a submit reported as failed may still be written, so a caller retries with an
idempotency key, and gets the same task back, never a duplicate.
"""
from __future__ import annotations

import threading
import time

import redis

from engine import QueueUnavailable, Settings, Task, TaskQueue, TaskWorker
from engine.connection import connect
from tests.support.steps import wait_until


def test_a_short_pause_only_delays_and_a_long_one_is_retried_without_duplicates(redis_process, namespace):
    settings = Settings.from_mapping({}, heartbeat_interval=0.2, lease_timeout=5.0)
    admin = redis.Redis.from_url(redis_process.url, decode_responses=True, protocol=2)
    queue = TaskQueue(connect(redis_process.url), settings=settings, namespace=namespace)
    done: list[str] = []
    worker = TaskWorker(queue, handlers={"echo": lambda t: done.append(t.task_id)})
    runner = threading.Thread(target=worker.start, daemon=True)
    runner.start()
    try:
        first = queue.submit_tasks([Task(task_type="echo") for _ in range(50)])
        admin.execute_command("CLIENT", "PAUSE", "1000", "ALL")
        paused_at = time.monotonic()
        during = queue.submit_task(Task(task_type="echo"))          # waits out the pause
        assert time.monotonic() - paused_at >= 0.8
        # A pause longer than a client's socket timeout: that call fails, the write lands.
        impatient = TaskQueue(connect(redis_process.url, socket_timeout=0.3), settings=settings,
                              namespace=namespace)
        admin.execute_command("CLIENT", "PAUSE", "1200", "ALL")
        key = "order-42"
        try:
            late = impatient.submit_task(Task(task_type="echo", idempotency_key=key))
        except QueueUnavailable:
            late = None
        assert late is None, "the call should have timed out during the pause"
        retried = queue.submit_task(Task(task_type="echo", idempotency_key=key))   # after the pause
        again = queue.submit_task(Task(task_type="echo", idempotency_key=key))
        assert retried == again
        wanted = set(first) | {during, retried}
        wait_until(lambda: wanted <= set(done), timeout=15, what="every task to run")
        assert len(done) == len(set(done)) == 52                   # once each, no duplicate
        assert runner.is_alive()
    finally:
        worker.stop()
        runner.join(timeout=10)
        admin.close()
