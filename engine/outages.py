"""How a worker lives through Redis being away: notice, back off, notice the return.

One ``Outage`` per worker, shared by its parts (the claim loop, the outcome writer, the
lease keeper), so an outage is logged once, and its end by the first call that reaches
Redis again: the time logged is the outage's own.
"""
from __future__ import annotations

import logging
import random
import threading

import redis

from . import clock
from .errors import CLUSTER_OUTAGE_ERRORS, REFUSAL_ERRORS, QueueUnavailable, RedisRefused, refusal

log = logging.getLogger("engine.worker")

# Redis gone, or refusing writes for a while (QueueUnavailable covers RedisRefused;
# REFUSAL_ERRORS are refusals that reach us untranslated, e.g. on Redis Cluster), or a
# Redis Cluster between states (CLUSTER_OUTAGE_ERRORS): the worker keeps what it holds
# and retries with backoff.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, QueueUnavailable, *REFUSAL_ERRORS,
              *CLUSTER_OUTAGE_ERRORS)
MAX_BACKOFF_SECONDS = 5.0


class Outage:
    """The outage under way, if any, for the worker ``worker_id``."""

    def __init__(self, worker_id: str):
        self.worker_id = worker_id
        self.since: float | None = None      # clock.monotonic() of its start
        self._backoff = 0.1                  # seconds; doubles while Redis stays away

    def noticed(self, exc: BaseException) -> None:
        """A call failed with one of REDIS_DOWN: log the outage once, at its start."""
        if self.since is not None:
            return
        self.since = clock.monotonic()
        self._backoff = 0.1
        refused = exc if isinstance(exc, RedisRefused) else refusal(exc)
        if refused is not None:     # its message is ours: no URL, no password
            log.warning("%s: %s; retrying with backoff", self.worker_id, refused)
        else:
            log.warning("%s: Redis unreachable (%s); reconnecting with backoff",
                        self.worker_id, type(exc).__name__)

    def over(self) -> None:
        """Called after every call that reached Redis: ends the outage under way."""
        since = self.since
        if since is not None:
            self.since = None
            log.warning("%s: reconnected to Redis after %.1f s", self.worker_id,
                        clock.monotonic() - since)

    def back_off(self, stopping: threading.Event) -> None:
        """Wait before the next try (jittered, doubling up to MAX_BACKOFF_SECONDS), or
        until ``stopping`` is set."""
        stopping.wait(self._backoff * random.uniform(0.5, 1.0))
        self._backoff = min(MAX_BACKOFF_SECONDS, self._backoff * 2)
