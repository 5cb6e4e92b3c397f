"""Session harness: one Redis for the whole run, a private namespace per test.

Tests never FLUSHDB: the server may be shared (``REDIS_URL``), so each test works under its own
namespace ``t_<8 hex>`` and only that namespace's keys (``{t_...}:*``) are deleted afterwards.

Fixtures:
- ``redis_server`` (session): an object with ``.url``; a private ``redis-server`` on a free port
  unless ``REDIS_URL`` is set.
- ``redis_url`` (session): that URL as a string.
- ``namespace``: a fresh namespace string; its keys are deleted at teardown.
- ``redis_client``: ``redis.Redis`` on ``redis_url`` (decode_responses=True, RESP2).
- ``redis_process``: a private, started ``RedisServerProcess`` this test may kill or restart.
- ``redis_server_bin``: the path of ``redis-server`` (fails in CI, skips elsewhere, when missing).
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from typing import Iterator

import pytest
import redis

from engine.embedded import RedisServerProcess, mask_url, redis_server_binary

pytest_plugins = ["tests.fixtures_engine", "tests.fixtures_console"]

_MISSING_SERVER = "redis-server not installed and REDIS_URL not set"


# --- options and markers ----------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running test, deselected unless --runslow is given")
    config.addinivalue_line("markers", "browser: drives the Streamlit console in a headless browser")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    # Deselected rather than skipped: the summary stays free of a skip line per slow test.
    kept = [item for item in items if "slow" not in item.keywords]
    deselected = [item for item in items if "slow" in item.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


# --- the server -------------------------------------------------------------------------------


def _require_binary() -> str:
    """The redis-server path; without it, fail loudly in CI (a silent skip would hide every test)."""
    binary = redis_server_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(f"{_MISSING_SERVER} (CI is set, so this is an error, not a skip)", pytrace=False)
        pytest.skip(_MISSING_SERVER)
    return binary


@dataclass(frozen=True)
class ExternalRedis:
    """The server named by ``REDIS_URL``: shared, so tests may not restart it."""

    url: str


@pytest.fixture(scope="session")
def redis_server() -> Iterator[ExternalRedis | RedisServerProcess]:
    """The session's Redis: ``REDIS_URL`` when set, else a private redis-server on a free port."""
    external = os.environ.get("REDIS_URL")
    if external:
        client = redis.Redis.from_url(external, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        except (redis.exceptions.RedisError, OSError) as exc:
            # A configured server that does not answer is a setup error, never a skip.
            pytest.fail(f"REDIS_URL={mask_url(external)} does not answer PING: {exc}", pytrace=False)
        finally:
            client.close()
        yield ExternalRedis(url=external)
        return
    _require_binary()
    proc = RedisServerProcess()
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: ExternalRedis | RedisServerProcess) -> str:
    """The session Redis URL."""
    return redis_server.url


@pytest.fixture(scope="session")
def redis_server_bin() -> str:
    """Path of redis-server, for tests that start their own (fails in CI, skips elsewhere, if absent)."""
    return _require_binary()


@pytest.fixture
def redis_process(redis_server_bin: str, tmp_path) -> Iterator[RedisServerProcess]:
    """A fresh private redis-server for this test alone: kill it, restart it, it is stopped after."""
    proc = RedisServerProcess(data_dir=tmp_path / "redis-private")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


# --- per-test isolation -----------------------------------------------------------------------


def _glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters (and braces, so the pattern reads as literal)."""
    return re.sub(r"([\\*?\[\]{}^])", r"\\\1", text)


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A namespace unique to this test; only its keys ``{<namespace>}:*`` are deleted afterwards."""
    ns = f"t_{uuid.uuid4().hex[:8]}"
    yield ns
    client = redis.Redis.from_url(redis_url, decode_responses=True, protocol=2)
    try:
        pattern = _glob_escape("{%s}:" % ns) + "*"
        batch: list[str] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the session Redis: str replies, RESP2 (the shapes the engine is written for)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True, protocol=2)
    try:
        yield client
    finally:
        client.close()
