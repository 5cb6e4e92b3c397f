"""The queue's vocabulary: priorities, statuses, task types, tasks and the stats snapshot."""
from __future__ import annotations

import enum
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import clock
from .errors import ValidationError
from .validation import (MAX_DELAY_SECONDS, MAX_RETRIES, MAX_SESSION_CHARS, MAX_TIMEOUT_SECONDS,
                         check_count, check_fraction, check_id, check_run_at, check_seconds,
                         check_text, check_type_name, checked_type_names, is_valid_id, shown)


class TaskPriority(enum.IntEnum):
    """How soon a task runs: URGENT before HIGH before NORMAL before LOW."""

    LOW = 0
    NORMAL = 5
    HIGH = 10
    URGENT = 15

    @classmethod
    def parse(cls, value: "TaskPriority | int | str") -> "TaskPriority":
        """Accept a member, its int value or its name in any case; else ValueError."""
        if isinstance(value, cls):
            return value
        try:
            if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
                return cls[value.strip().upper()]
            if isinstance(value, (int, str)) and not isinstance(value, bool):
                return cls(int(value))
        except (KeyError, ValueError):
            pass
        raise ValidationError(
            "priority must be one of low, normal, high, urgent (or 0, 5, 10, 15, or a "
            f"TaskPriority member), got {shown(value)}")

    @property
    def label(self) -> str:
        """Lower-case name, as used in key names (``queue:high``)."""
        return self.name.lower()


class TaskStatus(str, enum.Enum):
    """Where a task is in its life."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRY = "retry"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
WAITING_STATUSES = frozenset({TaskStatus.PENDING, TaskStatus.SCHEDULED, TaskStatus.RETRY})
ACTIVE_STATUSES = frozenset(set(TaskStatus) - TERMINAL_STATUSES)


class TaskType(str, enum.Enum):
    """Built-in task types; user code may use its own type names (plain strings)."""

    AGENT_QUERY = "agent_query"
    BATCH_QUERY = "batch_query"
    CUSTOM = "custom"

    def __str__(self) -> str:
        return self.value


def type_name(task_type: "TaskType | str") -> str:
    """The stored name of a task type (enum value or the user's own string, checked by
    :func:`engine.validation.check_type_name`)."""
    if isinstance(task_type, TaskType):
        return task_type.value
    return check_type_name(task_type)


class Backoff(str, enum.Enum):
    """How the delay between retries grows."""

    FIXED = "fixed"
    EXPONENTIAL = "exponential"


# A task's retry policy as its hash stores it (delays in ms). A value equal to its default
# here is left out of the hash: submit writes fewer fields, measured at about a twentieth
# of a submit's Redis time. Readers fill the gaps with retry_policy().
STORED_DEFAULTS: dict[str, Any] = {"retry_delay": 60_000, "backoff": Backoff.FIXED.value,
                                   "max_retry_delay": 3_600_000}


def retry_policy(retry_delay: str | None, backoff: str | None,
                 max_retry_delay: str | None) -> dict[str, Any]:
    """The stored retry fields (absent ones None) as seconds and a backoff name."""
    d = STORED_DEFAULTS
    return {"retry_delay": int(retry_delay or d["retry_delay"]) / 1000,
            "backoff": backoff or d["backoff"],
            "max_retry_delay": int(max_retry_delay or d["max_retry_delay"]) / 1000}


_BACKOFFS = tuple(b.value for b in Backoff)


def new_task_id() -> str:
    """A fresh task id: 32 hex digits."""
    return uuid.uuid4().hex


@dataclass
class Task:
    """A unit of work to submit.

    ``payload`` must be a dict of JSON (checked, with its size, when submitted: it can be
    changed after the Task is built). ``retry_delay`` is in seconds; with
    ``backoff="exponential"`` it doubles per attempt (with jitter), capped at
    ``max_retry_delay``. ``run_at`` / ``delay`` schedule it for later.
    ``idempotency_key`` makes a second submit with the same key return the first id.
    ``timeout`` (seconds) is enforced by the worker: past it the task ends with reason
    ``timeout`` and is retried or failed per its policy. ``max_retries`` and
    ``retry_delay`` left at None take the queue's ``QUEUE_MAX_RETRIES`` / ``QUEUE_RETRY_DELAY``.
    ``group`` names the task's fair-share group (default: its session, else its batch):
    within a priority, groups take turns, so a big batch does not hold up a single query.
    Every field is checked when the Task is built and again when it is submitted
    (:meth:`validate`; the limits are in :mod:`engine.validation`): a bad one is a
    ValidationError naming it.
    """

    task_type: TaskType | str = TaskType.CUSTOM
    payload: dict[str, Any] = field(default_factory=dict)
    priority: TaskPriority | int | str = TaskPriority.NORMAL
    max_retries: int | None = None
    retry_delay: float | None = None
    backoff: Backoff | str = Backoff.FIXED
    max_retry_delay: float = STORED_DEFAULTS["max_retry_delay"] / 1000
    session_id: str | None = None
    run_at: datetime | None = None
    delay: float | None = None
    idempotency_key: str | None = None
    timeout: float | None = None
    task_id: str = field(default_factory=new_task_id)
    parent_id: str | None = None
    group: str | None = None

    @property
    def share_group(self) -> str | None:
        """The fair-share group the task waits in: ``group``, else its session, else its
        batch; None for a task that takes its own turn."""
        return self.group or self.session_id or self.parent_id

    def __post_init__(self) -> None:
        if not isinstance(self.payload, dict):
            raise ValidationError(f"payload must be a dict, got {type(self.payload).__name__}")
        if self.session_id is None and isinstance(self.payload.get("session_id"), str):
            self.session_id = self.payload["session_id"]
        self.validate()

    def validate(self) -> None:
        """Check every field (normalising priority, type, backoff and empty text), or raise
        ValidationError naming the first bad one. Runs when the Task is built and again
        at submit (fields can be changed in between), so the common case is kept cheap."""
        if type(self.priority) is not TaskPriority:
            self.priority = TaskPriority.parse(self.priority)
        task_type = self.task_type
        if type(task_type) is not TaskType and (type(task_type) is not str
                                                or checked_type_names.get(task_type) != task_type):
            self.task_type = check_type_name(task_type)
        if type(self.backoff) is not Backoff:
            # Compared, not looked up: Backoff(value) hashes and reprs whatever it is given.
            if not isinstance(self.backoff, str) or self.backoff not in _BACKOFFS:
                raise ValidationError("backoff must be 'fixed' or 'exponential', "
                                      f"got {shown(self.backoff)}")
            self.backoff = Backoff(self.backoff)
        if type(self.payload) is not dict and not isinstance(self.payload, dict):
            raise ValidationError(f"payload must be a dict, got {type(self.payload).__name__}")
        if not is_valid_id(self.task_id):
            check_id(self.task_id, "task_id")
        if self.parent_id is not None:
            check_id(self.parent_id, "parent_id")
        if self.max_retries is not None:
            check_count(self.max_retries, "max_retries", MAX_RETRIES)
        if self.retry_delay is not None:      # None: the queue's default, filled in at submit
            check_seconds(self.retry_delay, "retry_delay", MAX_DELAY_SECONDS)
        limit = self.max_retry_delay          # a float, most often the default: checked inline
        if type(limit) is not float or not 0 <= limit <= MAX_DELAY_SECONDS:
            check_seconds(limit, "max_retry_delay", MAX_DELAY_SECONDS)
        if self.delay is not None:
            check_seconds(self.delay, "delay", MAX_DELAY_SECONDS)
        if self.run_at is not None:
            check_run_at(self.run_at)
        if self.timeout is not None:
            check_seconds(self.timeout, "timeout", MAX_TIMEOUT_SECONDS, zero=False)
        if self.session_id is not None:
            if type(self.session_id) is str and not self.session_id:
                self.session_id = None      # "" means no session, as None does
            else:
                check_text(self.session_id, "session_id", MAX_SESSION_CHARS)
        if self.group is not None:
            if type(self.group) is str and not self.group:
                self.group = None
            else:
                check_text(self.group, "group", MAX_SESSION_CHARS)
        if self.idempotency_key is not None:
            if type(self.idempotency_key) is str and not self.idempotency_key:
                self.idempotency_key = None
            else:
                check_text(self.idempotency_key, "idempotency_key")

    @property
    def type_name(self) -> str:
        """The stored name of this task's type."""
        return type_name(self.task_type)

    def due_ms(self) -> int | None:
        """Absolute due time in epoch ms when ``run_at`` is set (``delay`` is resolved by
        Redis's clock at submit)."""
        return clock.to_ms(self.run_at) if self.run_at is not None else None


MAX_QUERY_CHARS = 100_000    # an agent query's longest text (the agent and CSV jobs check it)


def AgentTask(payload: dict[str, Any] | None = None, **kwargs: Any) -> Task:  # noqa: N802 - guide's name
    """A :class:`Task` of type ``AGENT_QUERY`` (the guide's ``AgentTask``)."""
    kwargs.setdefault("task_type", TaskType.AGENT_QUERY)
    return Task(payload=payload or {}, **kwargs)


MAX_PROGRESS_MESSAGE_CHARS = 1000   # of a progress report's message


class HandlerContext:
    """What a running handler learns from its worker, and tells it (``task.context``).

    ``cancelled``: the task was cancelled, requeued or handed to another worker since it
    was claimed (a cancel reaches the worker at once, engine/cancels.py; the rest at its
    next heartbeat): a long handler should stop, as its result will be refused. ``stopping``: the worker is shutting down (a handler
    may finish early; its task is handed back if it does not finish). ``logger``: a logger
    whose lines name the task and the worker.
    """

    def __init__(self, task: "RunningTask"):
        self._task = task
        worker = task.worker
        self.task_id = task.task_id
        self.worker_id = getattr(worker, "worker_id", None)
        self.logger = logging.LoggerAdapter(logging.getLogger("engine.handler"),
                                            {"task_id": self.task_id, "worker_id": self.worker_id})

    @property
    def cancelled(self) -> bool:
        """Whether the task is no longer this worker's to run."""
        return self._task.cancelled

    @property
    def stopping(self) -> bool:
        """Whether the worker running the task is shutting down."""
        return bool(getattr(self._task.worker, "stopping", False))

    def report_progress(self, fraction: float, message: str | None = None) -> None:
        """Say how far the task is: ``fraction`` from 0 to 1 and an optional one-line
        ``message`` (up to 1,000 characters). Buffered, never waits on Redis: the worker
        writes at most ten reports a second per task, the newest (engine/progress.py)."""
        fraction = check_fraction(fraction)
        if message is not None and message != "":
            check_text(message, "message", MAX_PROGRESS_MESSAGE_CHARS)
        sink = getattr(self._task.worker, "progress", None)
        if sink is not None:
            sink.report(self._task, fraction, message)

    def stream(self, text: str) -> None:
        """Append ``text`` to the task's answer so far, which readers see growing
        (``get_task_status(id)["partial"]``). Buffered as :meth:`report_progress`; up to
        64 KB of text is kept per task."""
        if not isinstance(text, str):
            raise ValidationError(f"stream takes text (str), got {type(text).__name__}")
        sink = getattr(self._task.worker, "progress", None)
        if text and sink is not None:
            sink.stream(self._task, text)


@dataclass
class RunningTask:
    """What a handler receives: one claimed task."""

    task_id: str
    task_type: str
    payload: dict[str, Any]
    priority: TaskPriority
    attempt: int
    max_retries: int
    session_id: str | None = None
    created_at_ms: int | None = None
    timeout: float | None = None
    token: str = field(default="", repr=False)
    cancelled: bool = False
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    # The provider limit key the task runs under (engine/limits.py), and what the
    # provider's last answer said of its limits (a handler's backend tells it, below).
    limit_key: str | None = field(default=None, repr=False)
    provider_signal: Any = field(default=None, repr=False, compare=False)
    # The worker holding the task (engine/execution.py: HandlerContext talks to it).
    worker: Any = field(default=None, repr=False, compare=False)

    @property
    def context(self) -> "HandlerContext":
        """How the handler talks to its worker (:class:`HandlerContext`). Made on first
        use (most handlers never ask), then kept: a handler streaming token by token asks
        for it on every ``stream`` call, and making one costs ~5 µs."""
        context = self.__dict__.get("_context")
        if context is None:
            context = self.__dict__["_context"] = HandlerContext(self)
        return context

    def report_progress(self, fraction: float, message: str | None = None) -> None:
        """How far the task is, 0 to 1, with an optional message
        (:meth:`HandlerContext.report_progress`)."""
        self.context.report_progress(fraction, message)

    def stream(self, text: str) -> None:
        """Append to the task's answer so far (:meth:`HandlerContext.stream`)."""
        self.context.stream(text)

    def note_provider(self, signal: Any) -> None:
        """Record what a provider's answer said of its limits (engine.limits.ProviderSignal);
        the worker teaches it to every worker when the task's outcome is written."""
        self.provider_signal = signal

    @property
    def created_at(self) -> str | None:
        """When the task was submitted, ISO-8601 (formatted on demand: formatting every
        claimed task's time cost a worker ~8 µs a task)."""
        return clock.to_iso(self.created_at_ms)


@dataclass
class QueueStats:
    """A snapshot of the queue, as the sidebar and ``get_queue_stats`` show it.

    ``completed_tasks`` and ``failed_tasks`` are lifetime counters (they survive result
    expiry); ``failed_in_index`` is the number of dead letters still stored;
    ``routed_tasks`` counts pending tasks set aside for a worker of their type (they are
    in ``pending_tasks`` but in no ``depth_by_priority`` list).
    """

    pending_tasks: int = 0
    scheduled_tasks: int = 0
    running_tasks: int = 0
    retry_tasks: int = 0
    completed_tasks: int = 0
    failed_tasks: int = 0
    cancelled_tasks: int = 0
    submitted_tasks: int = 0
    retried_tasks: int = 0
    failed_in_index: int = 0
    active_workers: int = 0
    depth_by_priority: dict[str, int] = field(default_factory=dict)
    routed_tasks: int = 0

    @property
    def success_rate(self) -> float:
        """completed / (completed + failed), 0..1 (1.0 before anything finished)."""
        done = self.completed_tasks + self.failed_tasks
        return self.completed_tasks / done if done else 1.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, including ``success_rate``."""
        from dataclasses import asdict
        return {**asdict(self), "success_rate": self.success_rate}
