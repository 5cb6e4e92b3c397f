"""The ACL user of docs/PRODUCTION.md, applied as written to a private redis-server: the
queue's whole life cycle works through it, and it cannot reach anything outside its
namespace nor run the commands that could hurt the server."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis

from console.auth import LoginThrottle
from engine import Settings, Task, TaskQueue, TaskScheduler, TaskWorker
from engine.connection import connect
from engine.health import check_redis
from engine.observability import QueueMetrics, readiness

DOC = Path(__file__).resolve().parent.parent / "docs" / "PRODUCTION.md"
PASSWORD = "a-long-random-password"


def acl_line(namespace: str) -> str:
    """The documented line, for this test's namespace and password."""
    [line] = [line for line in DOC.read_text().splitlines() if line.startswith("ACL SETUSER ")]
    return line.replace("agent_queue", namespace).replace("<password>", PASSWORD)


@pytest.fixture
def restricted(redis_process, namespace):
    admin = redis.Redis.from_url(redis_process.url, decode_responses=True, protocol=2)
    admin.execute_command(*acl_line(namespace).split())
    host_port = redis_process.url.split("//", 1)[1]
    url = f"redis://agentqueue:{PASSWORD}@{host_port}"
    settings = Settings.from_mapping({}, heartbeat_interval=0.2, lease_timeout=1.0)
    queue = TaskQueue(connect(url), settings=settings, namespace=namespace)
    yield admin, queue, url
    admin.close()


def test_the_documented_acl_user_runs_the_whole_life_cycle(restricted):
    admin, queue, _ = restricted
    seen = []
    subscription = queue.subscribe_to_events(lambda message: seen.append(message["data"]))
    try:
        ids = queue.submit_tasks([Task(task_type="echo", payload={"i": i}) for i in range(5)])
        waiter = threading.Thread(target=lambda: seen.append(queue.wait_for_result(ids[0], timeout=10)))
        waiter.start()
        queue.submit_task(Task(task_type="echo", delay=3600))
        TaskScheduler(queue=queue).add_schedule("nightly", cron="0 3 * * *", task=Task(task_type="echo"))
        worker = TaskWorker(queue, handlers={"echo": lambda t: t.payload})
        assert worker.start(burst=True)["processed"] == 5
        waiter.join(timeout=10)
        assert queue.get_queue_stats().completed_tasks == 5
        assert [t["task_id"] for t in queue.list_tasks(status="completed", limit=10)]
        queue.list_workers()
        queue.throughput(5)
        assert queue.store.usage([(ids[0], "gpt-4o-mini", 10, 5, 15, 9000)]) == [1]
        queue.set_budget(session_id="s", tokens=100)
        assert queue.usage_totals(5)["total"]["calls"] == 1 and queue.budgets()[0]["tokens"] == 100
        queue.read_events()
        queue.cancel_task(queue.submit_task(Task(task_type="echo", delay=3600)))
        queue.purge("cancelled")
        assert check_redis(queue.client, queue.keys.stats).policy == "noeviction"
        assert readiness(queue, "w") == (True, "ready")
        assert list(QueueMetrics(queue).collect())[0].samples[0].value == 1     # redis_up
        throttle = LoginThrottle(queue.client, queue.keys)
        assert throttle.attempt("x", "y", "10.0.0.1").message == "Wrong password."
        assert throttle.lockouts() == []
    finally:
        subscription.stop()
    assert any('"task.completed"' in str(item) for item in seen)


@pytest.mark.parametrize("command", [
    ("GET", "outside"), ("SET", "outside", "1"), ("KEYS", "*"), ("FLUSHALL",), ("FLUSHDB",),
    ("CONFIG", "SET", "maxmemory-policy", "allkeys-lru"), ("SHUTDOWN",), ("SWAPDB", "0", "1"), ("SELECT", "1"), ("SCAN", "0"), ("BGSAVE",),
    ("ACL", "LIST"), ("PUBLISH", "other-channel", "x"), ("EVAL", "return redis.call('GET', KEYS[1])", "1", "outside"),
    ("MONITOR",), ("CLIENT", "KILL", "TYPE", "normal"), ("SCRIPT", "FLUSH"), ("FUNCTION", "FLUSH"),
])
def test_the_documented_acl_user_is_refused_everything_else(restricted, command):
    admin, queue, url = restricted
    admin.set("outside", "untouched")
    client = redis.Redis.from_url(url, decode_responses=True, protocol=2)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*command)
    assert admin.get("outside") == "untouched"
    client.close()
