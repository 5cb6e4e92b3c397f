"""Engine fixtures: a queue in the test's own namespace on the session's Redis."""
from __future__ import annotations

from typing import Callable, Iterator

import pytest
import redis

from engine import Settings, TaskQueue, TaskWorker
from engine.clock import FixedClock
from engine.connection import connect

# Short heartbeat and lease so recovery tests finish quickly; still lease > heartbeat.
TEST_SETTINGS = dict(heartbeat_interval=0.2, lease_timeout=1.0, default_retry_delay=0.0)


@pytest.fixture
def settings() -> Settings:
    """Settings for tests: defaults plus a short heartbeat and lease, no .env read."""
    return Settings.from_mapping({}, **TEST_SETTINGS)


@pytest.fixture
def queue(redis_url: str, namespace: str, settings: Settings) -> Iterator[TaskQueue]:
    """A TaskQueue on the session Redis, in this test's namespace, on Redis's clock."""
    client = connect(redis_url)
    yield TaskQueue(client, settings=settings, namespace=namespace)
    client.close()


@pytest.fixture
def fixed_clock() -> FixedClock:
    """A clock the test moves by hand; pass it to ``clocked_queue``."""
    return FixedClock()


@pytest.fixture
def clocked_queue(redis_url: str, namespace: str, settings: Settings,
                  fixed_clock: FixedClock) -> Iterator[TaskQueue]:
    """A TaskQueue whose scripts use ``fixed_clock`` instead of Redis TIME."""
    client = connect(redis_url)
    yield TaskQueue(client, settings=settings, namespace=namespace, clock=fixed_clock)
    client.close()


@pytest.fixture
def make_worker(queue: TaskQueue) -> Callable[..., TaskWorker]:
    """Build workers on ``queue`` (or another queue passed as ``queue=``)."""
    def build(**kwargs) -> TaskWorker:
        kwargs.setdefault("queue", queue)
        return TaskWorker(**kwargs)
    return build


@pytest.fixture
def private_queue(redis_process, namespace: str) -> Iterator[tuple[TaskQueue, redis.Redis]]:
    """(queue, admin client) on this test's own redis-server, for tests that reconfigure
    the server (maxmemory, replicaof): a short heartbeat, a long lease."""
    client = connect(redis_process.url)
    admin = redis.Redis.from_url(redis_process.url, decode_responses=True)
    settings = Settings.from_mapping({}, heartbeat_interval=0.2, lease_timeout=30.0)
    yield TaskQueue(client, settings=settings, namespace=namespace), admin
    admin.config_set("maxmemory", "0")
    client.close()
    admin.close()
