"""``python worker.py`` as operators run it: banner, signals, crashes, Redis outages, exit codes.

Workers run with a 1 s lease and 0.2 s heartbeat (environment), so recovering from a
SIGKILL takes about a second; every wait polls against a deadline.
"""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time

import pytest

from engine import Settings, Task, TaskQueue, TaskWorker
from engine.connection import connect
from engine.embedded import RedisServerProcess, free_port
from tests.support.indexes import assert_consistent
from tests.support.processes import REPO_ROOT, WorkerProcess, worker_env
from tests.support.steps import wait_until

BANNER_ID = r"Worker (worker-[0-9a-f]{8})"


@pytest.fixture
def spawn(redis_url, namespace):
    """Start ``worker.py`` processes on the session Redis in this test's namespace."""
    started: list[WorkerProcess] = []

    def start(*args: str, url: str | None = None, **env: str) -> WorkerProcess:
        process = WorkerProcess(worker_env(url or redis_url, namespace, **env), *args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def test_banner_names_the_worker_and_says_ready(spawn, queue):
    worker = spawn()
    match = worker.wait_for_line(BANNER_ID + r" ready")
    assert worker.wait_for_line(BANNER_ID + r" starting\.\.\.").group(1) == match.group(1)
    assert "Task Queue Worker" in worker.stdout[1]
    assert any(f"namespace={queue.namespace}" in line for line in worker.stdout)
    wait_until(lambda: queue.get_queue_stats().active_workers == 1, what="registration")
    assert [w["worker_id"] for w in queue.list_workers()] == [match.group(1)]
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_sigterm_lets_the_running_task_finish(spawn, queue, tmp_path):
    worker = spawn()
    worker_id = worker.worker_id
    started = tmp_path / "started"
    task_id = queue.submit_task(Task(task_type="sleep", payload={
        "seconds": 1.0, "started_file": str(started)}))
    # The handler itself must have begun: a task claimed but not started is handed back.
    wait_until(started.exists, what="the handler to start")
    sent = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()
    assert time.monotonic() - sent > 0.5          # it waited for the handler
    result = queue.get_task_result(task_id)
    assert result["status"] == "completed" and result["result"]["slept"] == 1.0
    assert result["worker_id"] == worker_id
    assert any("Stopping" in line for line in worker.stdout)
    assert worker.wait_for_line(rf"Worker {worker_id} stopped after [\d.]+ s: processed 1, "
                                r"failed 0, retried 0, lost 0")
    assert queue.get_queue_stats().active_workers == 0
    assert "worker.stopped" in [e["type"] for e in queue.read_events()
                                if e["data"].get("worker_id") == worker_id]


def test_second_sigterm_hands_the_running_task_back_at_once(spawn, queue, tmp_path, redis_client):
    worker = spawn()
    worker.wait_for_line(BANNER_ID + " ready")
    started = tmp_path / "started"
    task_id = queue.submit_task(Task(task_type="sleep", payload={
        "seconds": 30, "started_file": str(started)}))
    wait_until(started.exists, what="the handler to start")
    worker.signal(signal.SIGTERM)
    worker.wait_for_line("Stopping")
    sent = time.monotonic()
    worker.signal(signal.SIGTERM)
    # Generous bounds (a loaded CI machine is slow to start and stop a process), still
    # well short of the 30 s the handler would have taken.
    assert worker.wait(timeout=25) == 0, worker.output()
    assert time.monotonic() - sent < 20              # did not sit out the 30 s handler
    assert worker.wait_for_line("Second signal")
    assert_consistent(redis_client, queue.keys, task_id, "pending")
    assert queue.get_task(task_id)["attempts"] == 0   # the interrupted run is not counted


def test_sigkill_mid_task_the_task_runs_again_elsewhere(spawn, queue, redis_client):
    doomed = spawn()
    doomed_id = doomed.worker_id
    task_id = queue.submit_task(Task(task_type="sleep", payload={"seconds": 1.0}))
    wait_until(lambda: queue.get_task_status(task_id)["status"] == "running", what="the claim")
    assert queue.get_task_status(task_id)["worker_id"] == doomed_id
    doomed.signal(signal.SIGKILL)
    assert doomed.wait() == -signal.SIGKILL
    rescuer = spawn()
    rescuer_id = rescuer.worker_id
    result = queue.wait_for_result(task_id, timeout=15)
    assert result["status"] == "completed", result
    assert result["worker_id"] == rescuer_id
    record = queue.get_task(task_id)
    assert record["stalls"] == 1 and record["attempts"] == 1
    assert_consistent(redis_client, queue.keys, task_id, "completed")
    # The dead worker drops out of the active count (its heartbeat is older than the lease).
    wait_until(lambda: queue.get_queue_stats().active_workers == 1, timeout=5,
               what="the killed worker to stop counting")
    assert doomed_id not in [w["worker_id"] for w in queue.list_workers()
                             if w.get("state") not in ("lost", "stopped")]
    rescuer.signal(signal.SIGTERM)
    assert rescuer.wait() == 0


def test_worker_survives_a_redis_restart(spawn, redis_process, namespace):
    worker = spawn(url=redis_process.url)
    worker_id = worker.worker_id
    redis_process.stop()
    worker.wait_for_line("Redis unreachable", stream="stderr", timeout=10)
    redis_process.start()       # same port, empty (no persistence)
    client = connect(redis_process.url)
    try:
        settings = Settings.from_mapping({}, heartbeat_interval=0.2, lease_timeout=1.0)
        queue = TaskQueue(client, settings=settings, namespace=namespace)
        task_id = queue.submit_task(Task(task_type="echo", payload={"after": "restart"}))
        result = queue.wait_for_result(task_id, timeout=15)
        assert result["result"]["echo"] == {"after": "restart"}
        assert result["worker_id"] == worker_id               # the same process, not restarted
        worker.wait_for_line("reconnected to Redis", stream="stderr")
        assert worker.proc.poll() is None
    finally:
        client.close()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()


def test_result_finished_during_an_outage_is_written_when_redis_returns(redis_server_bin, tmp_path,
                                                                        namespace, caplog):
    """In-process: the handler finishes while Redis is down; the worker keeps the outcome and
    writes it after the restart. The server keeps its data across the restart (AOF)."""
    server = RedisServerProcess(port=free_port(), data_dir=tmp_path / "aof",
                                extra_args=("--appendonly", "yes", "--appendfsync", "always"))
    server.start()
    client = connect(server.url)
    # A lease far longer than the outage: this test is about the buffered write, not the reaper.
    settings = Settings.from_mapping({}, heartbeat_interval=0.2, lease_timeout=30.0)
    queue = TaskQueue(client, settings=settings, namespace=namespace)
    in_handler = threading.Event()

    def outlives_redis(task):
        in_handler.set()
        server.stop()               # Redis goes away while the handler is running
        return "written late, never dropped"

    worker = TaskWorker(queue, handlers={"slow": outlives_redis})
    thread = threading.Thread(target=worker.start)
    caplog.set_level(logging.WARNING, logger="engine.worker")
    try:
        task_id = queue.submit_task(Task(task_type="slow"))
        thread.start()
        assert in_handler.wait(5)
        wait_until(lambda: any("Redis unreachable" in r.getMessage() for r in caplog.records),
                   what="the worker to notice the outage")
        assert queue.ping() is False
        server.start()              # same port, same data directory: the task is still running
        result = queue.wait_for_result(task_id, timeout=15)
        assert result["status"] == "completed"
        assert result["result"] == "written late, never dropped"
        assert queue.get_task(task_id)["attempts"] == 1
        wait_until(lambda: any("reconnected" in r.getMessage() for r in caplog.records),
                   what="the reconnect log line")
    finally:
        worker.stop()
        thread.join(15)
        client.close()
        server.stop()
    assert not thread.is_alive()
    assert worker.stats == {"processed": 1, "failed": 0, "retried": 0, "lost": 0, "deferred": 0}


def test_workers_with_different_handlers_share_a_namespace(spawn, queue):
    # Three workers without the "shout" handler and one with it: every shout task must
    # reach that one (none fails for want of a handler), and the rest run anywhere.
    plain = [spawn() for _ in range(3)]
    shouter = spawn("--handlers", "tests.support.more_handlers")
    for worker in (*plain, shouter):
        worker.wait_for_line("ready")
    shouts = queue.submit_tasks([Task(task_type="shout", payload={"text": f"hi {i}"}, max_retries=0)
                                 for i in range(30)])
    echoes = queue.submit_tasks([Task(task_type="echo", payload={"i": i}) for i in range(30)])
    results = [queue.wait_for_result(task_id, timeout=20) for task_id in shouts + echoes]
    assert [r["status"] for r in results] == ["completed"] * 60, [r for r in results
                                                                  if r["status"] != "completed"]
    assert {r["result"]["pid"] for r in results[:30]} == {shouter.proc.pid}
    assert [r["result"]["text"] for r in results[:30]] == [f"HI {i}" for i in range(30)]
    assert queue.get_queue_stats().routed_tasks == 0
    for worker in (*plain, shouter):
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0, worker.output()


def test_burst_drains_then_exits_zero(spawn, queue):
    ids = queue.submit_tasks([Task(task_type="echo", payload={"i": i}) for i in range(5)])
    worker = spawn("--burst")
    assert worker.wait(timeout=20) == 0, worker.output()
    assert [queue.get_task_result(i)["result"]["echo"] for i in ids] == [{"i": i} for i in range(5)]
    assert worker.wait_for_line(r"processed 5, failed 0")
    assert queue.get_queue_stats().active_workers == 0


def test_bad_setting_exits_two_naming_it(namespace, redis_url):
    env = worker_env(redis_url, namespace, QUEUE_LEASE_TIMOUT="5")
    done = subprocess.run([sys.executable, "worker.py", "--no-agent", "--burst"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "QUEUE_LEASE_TIMOUT" in done.stderr
    assert "unknown setting" in done.stderr
    assert "ready" not in done.stdout


def test_password_in_redis_url_is_never_printed(spawn, redis_url):
    secret = "s3cr3t-Pa55"
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    # The test server has no password: AUTH fails, so the worker reports and retries.
    worker = spawn(url=f"redis://:{secret}@127.0.0.1:{port}/0")
    worker.wait_for_line(r"Connecting to task queue\.\.\. redis://:\*\*\*@127\.0\.0\.1")
    worker.wait_for_line(r"unreachable \(\w+\); retrying with backoff")
    worker.close()
    assert secret not in worker.output()
