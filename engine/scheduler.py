"""``TaskScheduler``: tasks at a time or after a delay, recurring (cron) schedules, and the
optional promote loop.

Workers promote due tasks and fire due schedules themselves, so a scheduler process is
optional; both are atomic, so running several never fires a task twice.

Recurring schedules live in Redis (a hash per schedule holding the cron expression, the
timezone and the task template as JSON, plus the ``schedules`` sorted set of names scored by
next fire time), so they survive restarts and every process sees the same ones. A tick
fires in two steps, each safe to repeat:

1. the task is submitted with the idempotency key ``schedule:<name>:<tick ms>``, so a second
   submit for the same tick (another scheduler racing, or a retry after a crash between the
   two steps) returns the first task instead of creating one;
2. ``fire_schedule.lua`` advances the next fire time only if it is still the tick the caller
   computed from, so exactly one caller advances it.
"""
from __future__ import annotations

import logging
import re
import threading
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from . import clock
from .batch_submit import batch_queries, is_batch
from .errors import (QueueUnavailable, ScheduleNotFound, ValidationError,
                     translate_redis_errors)
from .models import Task
from .queue import TaskQueue, get_task_queue
from .serialization import dumps, loads
from .submission import submit_row

log = logging.getLogger("engine.scheduler")

MISFIRE_POLICIES = ("catch_up_once", "skip")
DUE_LIMIT = 100                 # schedules fired per pass at most; the rest wait a pass
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:\-]{0,99}$")
_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
           "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@hourly": "0 * * * *"}


class TaskScheduler:
    """Schedules tasks for later on a :class:`TaskQueue` (default: the process-wide one):
    once (:meth:`schedule_task`, :meth:`schedule_task_in`) or on a cron schedule
    (:meth:`add_schedule`)."""

    def __init__(self, queue: TaskQueue | None = None):
        self.queue = queue or get_task_queue()
        self._stop = threading.Event()

    # -- one-off ------------------------------------------------------------------------
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

    # -- recurring ----------------------------------------------------------------------
    def add_schedule(self, name: str, cron: str, task: Task, timezone: str | None = None,
                     misfire: str = "catch_up_once") -> dict[str, Any]:
        """Submit a copy of ``task`` at every tick of ``cron`` (5 fields, or ``@daily`` and
        friends), read in ``timezone`` (an IANA name; default ``QUEUE_SCHEDULE_TIMEZONE``,
        UTC). Returns the schedule as :meth:`get_schedule` shows it.

        Adding a schedule that exists replaces its definition when it differs (the next run
        is recomputed) and changes nothing when it is the same, so calling this at every
        start of an application is safe. ``misfire`` says what a tick missed while nothing
        was running does on return: ``"catch_up_once"`` fires once, however many ticks were
        missed; ``"skip"`` fires nothing and waits for the next tick (a tick is missed when
        it is more than ``QUEUE_SCHEDULE_MISFIRE_GRACE`` seconds late). Each fired task gets
        ``payload["schedule"] = {"name", "tick"}`` unless its payload has that key.
        """
        name = validate_schedule_name(name)
        timezone = timezone or self.queue.settings.schedule_timezone
        validate_cron(cron)
        validate_timezone(timezone)
        if misfire not in MISFIRE_POLICIES:
            raise ValidationError(f"misfire must be one of {', '.join(MISFIRE_POLICIES)}, got {misfire!r}")
        template = task_template(task)
        submit_row(task_from_template(template, name, None), self.queue.settings)   # size and shape checks
        with translate_redis_errors():
            next_fire = next_tick_ms(cron, timezone, _now_ms(self.queue))
            self.queue.store.add_schedule(name, cron, timezone, misfire, dumps(template), next_fire)
        return self.get_schedule(name)

    def get_schedule(self, name: str) -> dict[str, Any]:
        """One schedule: name, cron, timezone, misfire, paused, next_run (UTC ISO-8601, None
        while paused), next_run_local (in the schedule's timezone), last_run, last_task_id,
        fires, skipped, last_error, task (the template), created_at. Raises ScheduleNotFound."""
        with translate_redis_errors():
            fields = self.queue.client.hgetall(self.queue.keys.schedule(name))
        if not fields:
            raise ScheduleNotFound(f"no schedule named {name!r}")
        return schedule_record(fields)

    def list_schedules(self) -> list[dict[str, Any]]:
        """Every schedule (see :meth:`get_schedule`), soonest next run first, paused last."""
        with translate_redis_errors():
            names = self.queue.client.zrange(self.queue.keys.schedules, 0, -1)
        replies = self.queue.read_hashes(self.queue.keys.schedule(name) for name in names)
        return [schedule_record(fields) for fields in replies if fields]

    def pause_schedule(self, name: str) -> dict[str, Any]:
        """Stop firing ``name`` until :meth:`resume_schedule`; returns the schedule."""
        with translate_redis_errors():
            code = self.queue.store.pause_schedule(name)
        if code < 0:
            raise ScheduleNotFound(f"no schedule named {name!r}")
        return self.get_schedule(name)

    def resume_schedule(self, name: str) -> dict[str, Any]:
        """Fire ``name`` again from its first tick after now (ticks that passed while it was
        paused are not caught up); returns the schedule."""
        record = self.get_schedule(name)
        with translate_redis_errors():
            next_fire = next_tick_ms(record["cron"], record["timezone"], _now_ms(self.queue))
            code = self.queue.store.resume_schedule(name, next_fire)
        if code < 0:
            raise ScheduleNotFound(f"no schedule named {name!r}")
        return self.get_schedule(name)

    def remove_schedule(self, name: str) -> bool:
        """Delete ``name`` (tasks it submitted are kept); False when there was none."""
        with translate_redis_errors():
            return self.queue.store.remove_schedule(name) == 1

    def run_schedule_now(self, name: str) -> str:
        """Submit the schedule's task once, now, outside its ticks (paused or not); its next
        run is unchanged. Returns the task id."""
        record = self.get_schedule(name)
        task = task_from_template(record["task"], name, None)
        return self.queue.submit_task(task)

    def fire_due_schedules(self) -> list[str]:
        """Fire every schedule whose tick has come; returns the ids of the tasks this call
        submitted (a tick another process fired first is not repeated)."""
        return fire_due_schedules(self.queue)

    # -- the loop -----------------------------------------------------------------------
    def run_pending(self) -> int:
        """One pass: fire due schedules, promote due tasks and recover expired leases;
        returns tasks promoted."""
        fire_due_schedules(self.queue)
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


# -- firing (workers call this from their maintenance) ------------------------------------
def fire_due_schedules(queue: TaskQueue, limit: int = DUE_LIMIT) -> list[str]:
    """Fire the schedules of ``queue`` that are due; returns the ids of the tasks submitted.

    One round trip when nothing is due. A schedule that cannot fire (its task no longer
    passes validation) skips the tick and records why; no error escapes but Redis being
    unreachable, so a worker's loop never dies of a bad schedule.
    """
    with translate_redis_errors():
        now, due = queue.store.due_schedules(limit)
    fired = []
    for name, _ in due:
        try:
            task_id = _fire_one(queue, name, now)
        except QueueUnavailable:
            raise
        except Exception:  # one broken schedule must not stop the others
            log.exception("schedule %r could not fire", name)
            continue
        if task_id:
            fired.append(task_id)
    return fired


def _fire_one(queue: TaskQueue, name: str, now: int) -> str | None:
    with translate_redis_errors():
        fields = queue.client.hgetall(queue.keys.schedule(name))
    if not fields or fields.get("paused") == "1" or int(fields["next_fire"]) > now:
        return None   # removed, paused or advanced by another process meanwhile
    tick = fields["next_fire"]
    next_fire = next_tick_ms(fields["cron"], fields["timezone"], now)
    late_ms = now - int(tick)
    if fields["misfire"] == "skip" and late_ms > queue.settings.schedule_misfire_grace * 1000:
        reason = f"missed by {late_ms / 1000:.0f} s (misfire=skip)"
        with translate_redis_errors():
            queue.store.fire_schedule(name, tick, next_fire, "", reason)
        return None
    try:
        task = task_from_template(loads(fields["task"]), name, int(tick))
        task.idempotency_key = f"schedule:{name}:{tick}"
        task_id = queue.submit_task(task)
    except ValidationError as exc:   # e.g. a payload limit lowered since the schedule was added
        log.warning("schedule %r skipped its tick: %s", name, exc)
        with translate_redis_errors():
            queue.store.fire_schedule(name, tick, next_fire, "", f"task rejected: {exc}")
        return None
    with translate_redis_errors():
        advanced = queue.store.fire_schedule(name, tick, next_fire, task_id)
    return task_id if advanced == 1 else None


# -- cron, timezones and templates ----------------------------------------------------------
def validate_schedule_name(name: Any) -> str:
    """1-100 letters, digits, spaces and ``_ . : -``, starting with a letter or digit."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(f"schedule name must be 1-100 letters, digits, spaces or '_.:-' "
                              f"starting with a letter or digit, got {name!r}")
    return name


def validate_cron(cron: Any) -> str:
    """A standard 5-field cron expression (minute hour day month weekday) or a macro
    such as ``@daily``; anything else is a ValidationError naming the problem."""
    if not isinstance(cron, str) or not cron.strip():
        raise ValidationError("cron must be a cron expression such as '0 9 * * *'")
    expanded = _MACROS.get(cron.strip().lower(), cron.strip())
    if len(expanded.split()) != 5 or not croniter.is_valid(expanded):
        raise ValidationError(f"invalid cron expression {cron!r}: use 5 fields (minute hour "
                              "day-of-month month day-of-week), e.g. '0 9 * * *' for 9:00 every "
                              "day, or @hourly, @daily, @weekly, @monthly")
    return expanded


def validate_timezone(name: Any) -> ZoneInfo:
    """The zone an IANA name (``Europe/Paris``, ``UTC``) stands for; else ValidationError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValidationError(f"unknown timezone {name!r}: use an IANA name such as "
                              "Europe/Paris, America/New_York or UTC") from None


def next_tick_ms(cron: str, timezone: str, after_ms: int) -> int:
    """The first tick of ``cron`` strictly after ``after_ms`` (epoch ms), with the
    expression read as wall-clock time in ``timezone``.

    When clocks go back an hour, a wall-clock time happens twice; a job at a fixed hour
    (``30 2 * * *``) fires the first time only, as cron does, while one whose hour field is
    ``*`` keeps its rhythm through both. A time skipped when clocks go forward fires at the
    first moment after the gap.
    """
    expanded = validate_cron(cron)
    zone = validate_timezone(timezone)
    every_hour = expanded.split()[1] == "*"
    ticks = croniter(expanded, datetime.fromtimestamp(after_ms / 1000, zone))
    while True:
        tick = ticks.get_next(datetime)
        if every_hour or not tick.fold:
            return round(tick.timestamp() * 1000)


def task_template(task: Task) -> dict[str, Any]:
    """What a schedule stores of ``task``: everything but its id and timing."""
    if not isinstance(task, Task):
        raise ValidationError(f"task must be a Task (e.g. AgentTask(payload={{...}})), got "
                              f"{type(task).__name__}")
    if task.run_at is not None or task.delay is not None:
        raise ValidationError("a scheduled task runs at each tick: leave run_at and delay unset")
    if task.idempotency_key or task.parent_id:
        raise ValidationError("a scheduled task may not carry an idempotency key or parent: "
                              "the scheduler gives each tick its own key")
    if is_batch(task):
        batch_queries(task.payload)
    return {"task_type": task.type_name, "payload": task.payload, "priority": int(task.priority),
            "max_retries": task.max_retries, "retry_delay": task.retry_delay,
            "backoff": task.backoff.value, "max_retry_delay": task.max_retry_delay,
            "session_id": task.session_id, "timeout": task.timeout}


def task_from_template(template: dict[str, Any], name: str, tick_ms: int | None) -> Task:
    """A fresh task from a stored template; ``tick_ms`` None means "run now" by hand."""
    payload = dict(template.get("payload") or {})
    payload.setdefault("schedule", {"name": name, "tick": clock.to_iso(tick_ms)})
    return Task(**{**template, "payload": payload})


def schedule_record(fields: dict[str, str]) -> dict[str, Any]:
    """A schedule hash as the public dict."""
    paused = fields.get("paused") == "1"
    next_fire = None if paused else int(fields["next_fire"])
    zone = ZoneInfo(fields["timezone"])
    return {
        "name": fields["name"], "cron": fields["cron"], "timezone": fields["timezone"],
        "misfire": fields["misfire"], "paused": paused,
        "next_run": clock.to_iso(next_fire),
        "next_run_local": (datetime.fromtimestamp(next_fire / 1000, zone).isoformat()
                           if next_fire is not None else None),
        "last_run": clock.to_iso(fields.get("last_fire")),
        "last_task_id": fields.get("last_task_id") or None,
        "fires": int(fields.get("fires") or 0), "skipped": int(fields.get("skipped") or 0),
        "last_error": fields.get("last_error") or None,
        "task": loads(fields["task"], {}), "created_at": clock.to_iso(fields.get("created_at")),
    }


def _now_ms(queue: TaskQueue) -> int:
    """Now by the queue's clock: Redis TIME (or the test clock), never this host's."""
    if queue.clock is not None:
        return queue.clock.now_ms()
    seconds, micros = queue.client.time()
    return seconds * 1000 + micros // 1000
