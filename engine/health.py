"""Is this Redis safe to keep a queue in? Read its eviction policy and persistence.

Under an evicting ``maxmemory-policy`` (``allkeys-lru``, ``volatile-ttl``...), Redis drops
keys when memory runs short, acknowledged tasks and the stats hash among them, with no
error anywhere (one run under ``allkeys-lru`` and a tight ``maxmemory`` lost 4,508 of
10,000 acknowledged tasks). So ``worker.py`` refuses to start on such a server unless
``QUEUE_ALLOW_EVICTION=true``, checks again every minute while it runs, and the console
shows a red banner. Persistence off (no AOF, no snapshots) on a server the queue did not
start itself is a warning: a restart loses every task, but a cache-like deployment may
accept that.

Read with ``INFO`` (allowed to most users, managed services included) and, when the
user may, ``CONFIG GET save``; what cannot be read is reported as unknown, never guessed.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import redis

from .errors import ConfigurationError

log = logging.getLogger("engine.health")

CHECK_INTERVAL_SECONDS = 60.0
SAFE_POLICY = "noeviction"


@dataclass(frozen=True)
class RedisHealth:
    """What the server says about eviction and persistence (None: could not be read)."""

    policy: str | None
    maxmemory: int | None
    aof: bool | None
    snapshots: bool | None

    @property
    def evicting(self) -> bool:
        """Whether the server may drop keys to make room (any policy but noeviction)."""
        return self.policy is not None and self.policy != SAFE_POLICY

    @property
    def persistence_off(self) -> bool:
        """Whether a restart of this server loses everything (no AOF and no snapshots)."""
        return self.aof is False and self.snapshots is False

    def eviction_message(self) -> str:
        """The operator-facing sentence for an evicting server."""
        limit = (f"maxmemory {self.maxmemory:,} bytes" if self.maxmemory
                 else "maxmemory not set yet, but it can be at any time")
        return (f"Redis evicts keys under memory pressure (maxmemory-policy {self.policy}, {limit}): "
                "acknowledged tasks, results and counters can vanish without any error. Set "
                "maxmemory-policy noeviction (redis.conf, or CONFIG SET maxmemory-policy noeviction); "
                "with noeviction a full Redis refuses writes, which the queue reports and waits out.")

    def persistence_message(self) -> str:
        """The operator-facing sentence for a server that keeps nothing across a restart."""
        return ("Redis persistence is off (no AOF, no snapshots): a restart of Redis loses every "
                "task. Turn on appendonly yes (see docs/PRODUCTION.md).")

    def problems(self, embedded: bool = False) -> list[tuple[str, str]]:
        """``(level, message)`` pairs, level ``"error"`` or ``"warning"``. ``embedded``: the
        queue started this server itself (persistence off is then by design)."""
        found = []
        if self.evicting:
            found.append(("error", self.eviction_message()))
        if self.persistence_off and not embedded:
            found.append(("warning", self.persistence_message()))
        return found


def check_redis(client: Any, key: str | None = None) -> RedisHealth:
    """Read ``client``'s server (on Redis Cluster, the node that holds ``key``). Raises
    redis-py's connection errors; permission errors leave the fields unknown."""
    target = {}
    if key is not None and hasattr(client, "get_node_from_key"):
        target = {"target_nodes": client.get_node_from_key(key)}
    policy = maxmemory = aof = snapshots = None
    try:
        memory = client.info("memory", **target)
        policy = memory.get("maxmemory_policy")
        maxmemory = int(memory.get("maxmemory", 0) or 0)
        aof = bool(int(client.info("persistence", **target).get("aof_enabled", 0)))
    except redis.ResponseError:     # NOPERM, or INFO renamed away by a managed service
        pass
    try:
        save = client.config_get("save", **target).get("save")
        snapshots = None if save is None else bool(str(save).strip())
    except redis.ResponseError:
        pass
    return RedisHealth(policy=policy, maxmemory=maxmemory, aof=aof, snapshots=snapshots)


def refuse_unsafe_redis(health: RedisHealth, allow_eviction: bool) -> list[str]:
    """Start-up check of a worker: raise :class:`ConfigurationError` on an evicting server
    unless ``allow_eviction``; return the warnings to print."""
    warnings = []
    if health.evicting:
        if not allow_eviction:
            raise ConfigurationError(health.eviction_message()
                                     + " QUEUE_ALLOW_EVICTION=true starts anyway.")
        warnings.append(health.eviction_message() + " (allowed by QUEUE_ALLOW_EVICTION)")
    if health.persistence_off:
        warnings.append(health.persistence_message())
    if health.policy is None:
        warnings.append("Could not read maxmemory-policy (INFO not allowed?): make sure it is "
                        "noeviction.")
    return warnings


class HealthMonitor:
    """Re-reads the server every ``interval`` seconds in a daemon thread and logs a
    change for the worse (an operator may CONFIG SET an evicting policy at any time)."""

    def __init__(self, client: Any, key: str | None = None,
                 interval: float = CHECK_INTERVAL_SECONDS, first: RedisHealth | None = None):
        self.client, self.key, self.interval = client, key, interval
        self.last = first
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check_now(self) -> RedisHealth | None:
        """One check; logs an error when the server starts evicting, a warning when
        persistence goes off, and says when eviction stops. None when Redis is away."""
        try:
            health = check_redis(self.client, self.key)
        except (redis.RedisError, OSError):
            return None     # an outage is the worker's to report, not this monitor's
        before = self.last
        if health.evicting and not (before and before.evicting and before.policy == health.policy):
            log.error("%s", health.eviction_message())
        elif before is not None and before.evicting and not health.evicting:
            log.warning("Redis no longer evicts keys (maxmemory-policy %s)", health.policy)
        if health.persistence_off and not (before and before.persistence_off):
            log.warning("%s", health.persistence_message())
        self.last = health
        return health

    def start(self) -> "HealthMonitor":
        """Check every ``interval`` seconds until :meth:`stop`."""
        self._thread = threading.Thread(target=self._loop, name="redis-health", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.check_now()

    def stop(self) -> None:
        """End the thread (it is a daemon: a process may also simply exit)."""
        self._stop.set()
