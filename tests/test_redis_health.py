"""An unsafe Redis is refused or flagged: an evicting maxmemory-policy stops a worker from
starting (unless QUEUE_ALLOW_EVICTION=true) and puts a red banner on the console;
persistence off is a warning. Each test uses its own private redis-server."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import redis
import streamlit as st
from streamlit.testing.v1 import AppTest

from console.testing import APP
from engine.health import HealthMonitor, RedisHealth, check_redis, refuse_unsafe_redis
from engine import ConfigurationError
from tests.support.processes import REPO_ROOT, worker_env


@pytest.fixture
def private(redis_process):
    client = redis.Redis.from_url(redis_process.url, decode_responses=True, protocol=2)
    yield redis_process.url, client
    client.close()


def run_worker(url: str, namespace: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "worker.py", "--no-agent", "--burst"], cwd=REPO_ROOT,
                          env=worker_env(url, namespace, **env), capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize(("policy", "evicting"), [
    ("noeviction", False), ("allkeys-lru", True), ("allkeys-lfu", True), ("volatile-ttl", True),
    ("allkeys-random", True)])
def test_check_reads_the_policy_the_server_has(private, policy, evicting):
    _, client = private
    client.config_set("maxmemory-policy", policy)
    health = check_redis(client)
    assert health.policy == policy and health.evicting is evicting


def test_persistence_is_read_from_aof_and_save(private):
    _, client = private
    client.config_set("save", "")
    client.config_set("appendonly", "no")
    assert check_redis(client).persistence_off
    client.config_set("save", "3600 1")
    assert not check_redis(client).persistence_off
    client.config_set("save", "")
    client.config_set("appendonly", "yes")
    assert not check_redis(client).persistence_off


def test_worker_refuses_an_evicting_redis(private, namespace):
    url, client = private
    client.config_set("maxmemory-policy", "allkeys-lru")
    done = run_worker(url, namespace)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "maxmemory-policy allkeys-lru" in done.stderr and "QUEUE_ALLOW_EVICTION" in done.stderr
    assert "ready" not in done.stdout
    assert not client.exists("{%s}:workers" % namespace)       # it never registered


def test_worker_starts_on_an_evicting_redis_when_allowed_and_says_so(private, namespace):
    url, client = private
    client.config_set("maxmemory-policy", "volatile-lru")
    done = run_worker(url, namespace, QUEUE_ALLOW_EVICTION="true")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "allowed by QUEUE_ALLOW_EVICTION" in done.stderr


def test_worker_warns_when_persistence_is_off_but_starts(private, namespace):
    url, client = private
    client.config_set("save", "")
    client.config_set("appendonly", "no")
    done = run_worker(url, namespace)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "persistence is off" in done.stderr
    client.config_set("appendonly", "yes")
    done = run_worker(url, namespace)
    assert done.returncode == 0 and "persistence is off" not in done.stderr


def test_the_monitor_logs_a_policy_turned_evicting_while_running(private, caplog):
    _, client = private
    client.config_set("appendonly", "yes")
    monitor = HealthMonitor(client, first=check_redis(client))
    with caplog.at_level(logging.WARNING, logger="engine.health"):
        monitor.check_now()
        assert not caplog.records
        client.config_set("maxmemory-policy", "allkeys-lru")
        monitor.check_now()
        monitor.check_now()                          # said once, not every minute
        client.config_set("maxmemory-policy", "noeviction")
        monitor.check_now()
    assert [(r.levelname, r.getMessage()[:60]) for r in caplog.records] == [
        ("ERROR", "Redis evicts keys under memory pressure (maxmemory-policy al"),
        ("WARNING", "Redis no longer evicts keys (maxmemory-policy noeviction)")]


def test_unknown_policy_is_a_warning_not_a_guess():
    unknown = RedisHealth(policy=None, maxmemory=None, aof=None, snapshots=None)
    assert not unknown.evicting and not unknown.persistence_off
    assert any("Could not read maxmemory-policy" in w for w in refuse_unsafe_redis(unknown, False))
    with pytest.raises(ConfigurationError, match="QUEUE_ALLOW_EVICTION=true starts anyway"):
        refuse_unsafe_redis(RedisHealth("allkeys-lru", 100, True, True), False)


@pytest.fixture
def console_on(monkeypatch, namespace):
    def open_console(url: str) -> AppTest:
        monkeypatch.delenv("CONSOLE_PASSWORD", raising=False)
        monkeypatch.delenv("REDIS_HOST", raising=False)
        monkeypatch.setenv("REDIS_URL", url)
        monkeypatch.setenv("QUEUE_NAMESPACE", namespace)
        st.cache_data.clear()
        return AppTest.from_file(str(APP), default_timeout=30).run()
    yield open_console
    st.cache_data.clear()
    st.cache_resource.clear()


def test_console_shows_a_red_banner_on_an_evicting_redis(private, console_on):
    url, client = private
    client.config_set("appendonly", "yes")
    at = console_on(url)
    assert not at.exception and not at.error
    client.config_set("maxmemory-policy", "allkeys-lru")
    at = console_on(url)
    assert [e.value[:69] for e in at.main.error] == [
        "Redis evicts keys under memory pressure (maxmemory-policy allkeys-lru"]
    assert not [w for w in at.main.warning if "persistence" in w.value]


def test_console_warns_when_a_configured_redis_keeps_nothing(private, console_on):
    url, client = private
    client.config_set("save", "")
    client.config_set("appendonly", "no")
    at = console_on(url)
    assert any("persistence is off" in w.value for w in at.main.warning)
    assert not at.main.error
