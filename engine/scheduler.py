"""``TaskScheduler``: tasks at a time or after a delay, and the optional promote loop.

Workers promote due tasks themselves, so a scheduler process is optional; the promote
script is atomic, so running several never fires a task twice.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime

from .errors import ValidationError
from .models import Task
from .queue import TaskQueue, get_task_queue

log = logging.getLogger("engine.scheduler")


class TaskScheduler:
    """Schedules tasks for later on a :class:`TaskQueue` (default: the process-wide one)."""

    def __init__(self, queue: TaskQueue | None = None):
        self.queue = queue or get_task_queue()
        self._stop = threading.Event()

    def schedule_task(self, task: Task, execute_time: datetime) -> str:
        """Submit ``task`` to run at ``execute_time`` (a naive datetime is local time).
        A time in the past runs it at once."""
        if not isinstance(execute_time, datetime):
            raise ValidationError("execute_time must be a datetime")
        task.run_at, task.delay = execute_time, None
        return self.queue.submit_task(task)

    def schedule_task_in(self, task: Task, delay_seconds: float) -> str:
        """Submit ``task`` to run ``delay_seconds`` from now (measured by Redis's clock)."""
        if isinstance(delay_seconds, bool) or not isinstance(delay_seconds, (int, float)) or delay_seconds < 0:
            raise ValidationError(f"delay_seconds must be a number >= 0, got {delay_seconds!r}")
        task.run_at, task.delay = None, float(delay_seconds)
        return self.queue.submit_task(task)

    def run_pending(self) -> int:
        """One pass: promote due tasks and recover expired leases; returns tasks promoted."""
        moved = self.queue.promote_due()
        self.queue.reap_expired_leases()
        return moved

    def run_scheduler_loop(self, check_interval: float = 10) -> None:
        """Promote due tasks every ``check_interval`` seconds until :meth:`stop`."""
        self._stop.clear()
        while not self._stop.is_set():
            try:
                self.run_pending()
            except Exception:  # a passing outage must not end the loop
                log.exception("scheduler pass failed")
            self._stop.wait(check_interval)

    def stop(self) -> None:
        """End :meth:`run_scheduler_loop`."""
        self._stop.set()
