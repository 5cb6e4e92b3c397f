"""A worker's heartbeat: it says the worker is alive, renews the leases of the tasks it
holds, learns which of them are no longer its own, and reaps the leases of dead workers.

The ``LeaseKeeper`` beats in a thread of its own, and keeps beating while a graceful stop
finishes the tasks in hand: their leases must not lapse just because no new work is being
claimed. It stops for good once the worker has left the registry.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
from typing import Any, Callable

from .outages import REDIS_DOWN, Outage
from .outcomes import OutcomeWriter
from .queue import TaskQueue

log = logging.getLogger("engine.worker")


class LeaseKeeper:
    """The heartbeat of one worker. ``fields()`` gives the worker's registry details."""

    def __init__(self, queue: TaskQueue, worker_id: str, interval: float, writer: OutcomeWriter,
                 outage: Outage, fields: Callable[[], dict[str, Any]],
                 on_gone: Callable[[str], Any] | None = None):
        self.queue, self.worker_id, self.interval = queue, worker_id, interval
        self.writer, self.outage, self.fields = writer, outage, fields
        self.on_gone = on_gone     # told of each task no longer ours: its handler is stopped
        self.left = threading.Event()      # set once the worker has left: the beating ends
        self._lock = threading.Lock()      # never beat after the worker left: it would re-register

    def start(self) -> None:
        """Beat every ``interval`` seconds in a daemon thread until :meth:`leave`."""
        self.left.clear()
        threading.Thread(target=self._loop, name=f"{self.worker_id}-heartbeat", daemon=True).start()

    def beat(self) -> None:
        """One heartbeat now: renew the leases, mark the tasks no longer ours."""
        held = self.writer.tokens()
        details = {**self.fields(), "in_hand": len(held),
                   "current": json.dumps([task_id for task_id, _ in held[:20]])}
        lost = self.queue.store.heartbeat(self.worker_id, details, held)
        self.writer.mark_gone(lost[0::2])
        if self.on_gone is not None:
            for task_id in lost[0::2]:
                self.on_gone(task_id)

    def leave(self, final: dict[str, Any]) -> None:
        """Stop beating and take the worker out of the registry (``final`` stats)."""
        with self._lock:
            self.left.set()
        try:
            self.queue.store.worker_stop(self.worker_id, final)
        except REDIS_DOWN as exc:
            self.outage.noticed(exc)

    def _loop(self) -> None:
        while not self.left.wait(self.interval):
            try:
                with self._lock:
                    if self.left.is_set():
                        return
                    self.beat()
                self.queue.reap_expired_leases()
                self.outage.over()
            except REDIS_DOWN as exc:
                self.outage.noticed(exc)
            except Exception:  # never let the heartbeat thread die
                log.exception("%s: heartbeat failed", self.worker_id)


def host_details() -> dict[str, Any]:
    """Where a worker runs, for its registry entry."""
    return {"host": socket.gethostname(), "pid": os.getpid()}
