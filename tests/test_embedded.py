"""Tests of engine/embedded.py: the private redis-server and the demo fallbacks.

fakeredis appears here only because the fakeredis fallback itself is under test; every other test
runs against a real redis-server.
"""

from __future__ import annotations

import builtins
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from engine import embedded
from engine.embedded import (
    RedisServerProcess,
    RedisUnavailableError,
    free_port,
    mask_url,
    resolve_redis_url,
    start_embedded,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def _client(url: str) -> redis.Redis:
    # Short timeouts and no retries, so "the server is gone" is seen at once.
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=1,
        socket_timeout=2,
        retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
    )


def _answers(url: str) -> bool:
    client = _client(url)
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False
    finally:
        client.close()


def test_free_port_can_be_bound():
    port = free_port()
    assert 1024 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_redis_server_process_start_restart_stop(redis_process: RedisServerProcess):
    port, pid = redis_process.port, redis_process.pid
    assert redis_process.url == f"redis://127.0.0.1:{port}/0"
    assert pid is not None
    client = _client(redis_process.url)
    client.set("k", "v")
    assert client.get("k") == "v"

    redis_process.restart()
    assert redis_process.port == port
    assert redis_process.pid not in (None, pid)
    # Same address answers again; persistence is off, so the data is gone.
    assert _client(redis_process.url).get("k") is None

    redis_process.stop()
    assert redis_process.pid is None
    assert not _answers(redis_process.url)
    redis_process.stop()  # idempotent


def test_redis_server_process_context_manager_and_log(redis_server_bin: str, tmp_path: Path):
    with RedisServerProcess(data_dir=tmp_path) as proc:
        assert _answers(proc.url)
        url = proc.url
    assert not _answers(url)
    assert (tmp_path / "redis.log").is_file()


def test_redis_server_process_port_in_use_raises_with_log(redis_server_bin: str, tmp_path: Path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        proc = RedisServerProcess(port=port, data_dir=tmp_path)
        with pytest.raises(RuntimeError) as info:
            proc.start()
    assert str(port) in str(info.value)
    assert "redis.log" in str(info.value)  # the log tail is part of the message
    assert proc.pid is None


def test_start_embedded_uses_redis_server(redis_server_bin: str, tmp_path: Path):
    emb = start_embedded(tmp_path)
    try:
        assert emb.mode == "redis-server"
        assert emb.url.startswith("redis://127.0.0.1:")
        assert _answers(emb.url)
        assert (tmp_path / "redis" / "redis.log").is_file()
    finally:
        emb.stop()
    assert not _answers(emb.url)
    emb.stop()  # idempotent


def test_start_embedded_falls_back_to_fakeredis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(embedded, "redis_server_binary", lambda: None)
    emb = start_embedded(tmp_path)
    try:
        assert emb.mode == "fakeredis"
        assert emb.url.startswith("redis://127.0.0.1:")
        client = _client(emb.url)
        assert client.ping()
        script = "return redis.call('INCR', KEYS[1])"
        assert client.eval(script, 1, "{t}:n") == 1
        sha = client.script_load(script)
        assert client.evalsha(sha, 1, "{t}:n") == 2
        client.close()
    finally:
        emb.stop()
    assert not _answers(emb.url)


def test_fakeredis_fallback_does_not_hang_interpreter_exit(tmp_path: Path):
    # TcpFakeServer's handler threads are non-daemon by default: an open client connection kept
    # the interpreter from exiting. start_embedded must not inherit that.
    code = textwrap.dedent(
        f"""
        import redis
        from engine import embedded
        embedded.redis_server_binary = lambda: None
        emb = embedded.start_embedded({str(tmp_path)!r})
        client = redis.Redis.from_url(emb.url)
        assert client.ping()
        print("ok", flush=True)
        """
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert time.monotonic() - started < 10


def test_resolve_configured_url_that_answers(redis_url: str, tmp_path: Path):
    url, mode, emb = resolve_redis_url(redis_url, tmp_path)
    assert (url, mode, emb) == (redis_url, "configured", None)


def test_resolve_without_configured_url_starts_embedded(tmp_path: Path):
    url, mode, emb = resolve_redis_url(None, tmp_path)
    try:
        assert emb is not None
        assert mode == emb.mode
        assert mode in ("redis-server", "fakeredis")
        assert _answers(url)
    finally:
        emb.stop()


def test_resolve_dead_configured_url_raises_without_password(tmp_path: Path):
    secret = "s3cr3t-Pa55"
    dead = f"redis://:{secret}@127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError) as info:
        resolve_redis_url(dead, tmp_path)
    assert time.monotonic() - started < 3  # no silent retries
    err = info.value
    assert isinstance(err, builtins.ConnectionError)
    assert isinstance(err, redis.exceptions.ConnectionError)
    assert secret not in str(err) and secret not in repr(err)
    assert ":***@127.0.0.1:" in str(err)
    assert not any(p.name == "redis" for p in tmp_path.iterdir())  # no silent fallback


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://alice:pw@host:6380/1", "rediss://alice:***@host:6380/1"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://bob@host/0", "redis://bob@host/0"),
        ("redis://:p@w#x?y@host:1/0", "redis://:***@host:1/0"),
        ("unix:///tmp/r.sock?db=1&password=pw", "unix:///tmp/r.sock?db=1&password=***"),
    ],
)
def test_mask_url(url: str, masked: str):
    assert mask_url(url) == masked


def test_the_task_life_cycle_runs_on_the_fakeredis_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # The demo mode on a machine without redis-server runs the engine's Lua scripts in
    # fakeredis's Lua: submit (one and bulk), claim by priority, complete, retry then
    # fail, and a waiter woken by the result must all work there as on Redis.
    import threading

    from engine import Settings, Task, TaskQueue, TaskWorker
    from engine.connection import connect
    from tests.support.steps import wait_for_waiter

    monkeypatch.setattr(embedded, "redis_server_binary", lambda: None)
    emb = start_embedded(tmp_path)
    try:
        assert emb.mode == "fakeredis"
        queue = TaskQueue(connect(emb.url), settings=Settings.from_mapping({}), namespace="demo")
        low = queue.submit_task(Task(task_type="echo", payload={"n": 0}, priority="low"))
        bulk = queue.submit_tasks([Task(task_type="echo", payload={"n": i}) for i in (1, 2)])
        urgent = queue.submit_task(Task(task_type="echo", payload={"n": 3}, priority="urgent"))
        doomed = queue.submit_task(Task(task_type="boom", max_retries=1, retry_delay=0))
        order: list[str] = []

        def echo(task):
            order.append(task.task_id)
            return task.payload

        def boom(task):
            raise RuntimeError("kaboom")

        worker = TaskWorker(queue, handlers={"echo": echo, "boom": boom})
        stats = worker.start(burst=True)
        assert (stats["processed"], stats["retried"], stats["failed"]) == (4, 1, 1)
        assert order == [urgent, *bulk, low]
        assert queue.get_task_result(urgent)["result"] == {"n": 3}
        failed = queue.get_task_result(doomed)
        assert failed["status"] == "failed" and "kaboom" in failed["error"] and failed["attempts"] == 2

        waited = queue.submit_task(Task(task_type="echo", payload={"n": 4}))
        got = {}
        waiter = threading.Thread(target=lambda: got.update(queue.wait_for_result(waited, timeout=10)))
        waiter.start()
        wait_for_waiter(queue, waited)
        TaskWorker(queue, handlers={"echo": echo}).start(burst=True)
        waiter.join(10)
        assert got["result"] == {"n": 4}
        totals = queue.get_queue_stats()
        assert (totals.completed_tasks, totals.failed_tasks) == (5, 1)
    finally:
        emb.stop()


def test_a_server_given_a_directory_for_its_port_refuses_rather_than_use_another_server(tmp_path):
    # RedisServerProcess(dir).start() once "found" the machine's own server on the default
    # port already running and wrote a benchmark's tasks into it.
    with pytest.raises(TypeError, match="port must be an int"):
        RedisServerProcess(str(tmp_path))
