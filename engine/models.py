"""The queue's vocabulary: priorities, statuses, task types, tasks and the stats snapshot."""
from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import clock
from .errors import ValidationError


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
            f"unknown priority {value!r}: use one of low, normal, high, urgent "
            "(or 0, 5, 10, 15, or a TaskPriority member)")

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
    """The stored name of a task type (enum value or the user's own string)."""
    name = task_type.value if isinstance(task_type, TaskType) else task_type
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ValidationError(f"task type must be a non-empty string or TaskType, got {task_type!r}")
    return name.strip()


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


def new_task_id() -> str:
    """A fresh task id: 32 hex digits."""
    return uuid.uuid4().hex


@dataclass
class Task:
    """A unit of work to submit.

    ``payload`` must be JSON-serialisable. ``retry_delay`` is in seconds; with
    ``backoff="exponential"`` it doubles per attempt (with jitter), capped at
    ``max_retry_delay``. ``run_at`` / ``delay`` schedule it for later.
    ``idempotency_key`` makes a second submit with the same key return the first id.
    ``timeout`` (seconds) is passed to handlers that honour it. ``max_retries`` and
    ``retry_delay`` left at None take the queue's ``QUEUE_MAX_RETRIES`` / ``QUEUE_RETRY_DELAY``.
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

    def __post_init__(self) -> None:
        self.priority = TaskPriority.parse(self.priority)
        self.task_type = self.task_type if isinstance(self.task_type, TaskType) else type_name(self.task_type)
        try:
            self.backoff = Backoff(self.backoff)
        except ValueError:
            raise ValidationError(f"backoff must be 'fixed' or 'exponential', got {self.backoff!r}") from None
        if not isinstance(self.payload, dict):
            raise ValidationError(f"payload must be a dict, got {type(self.payload).__name__}")
        if self.max_retries is not None and (isinstance(self.max_retries, bool) or
                                             not isinstance(self.max_retries, int) or self.max_retries < 0):
            raise ValidationError(f"max_retries must be a whole number >= 0, got {self.max_retries!r}")
        for name in ("retry_delay", "max_retry_delay"):
            if name == "retry_delay" and self.retry_delay is None:
                continue   # the queue's default, filled in at submit
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) < 0:
                raise ValidationError(f"{name} must be a number of seconds >= 0")
        if self.delay is not None and (not isinstance(self.delay, (int, float)) or self.delay < 0):
            raise ValidationError(f"delay must be a number of seconds >= 0, got {self.delay!r}")
        if self.run_at is not None and not isinstance(self.run_at, datetime):
            raise ValidationError("run_at must be a datetime")
        if self.session_id is None and isinstance(self.payload.get("session_id"), str):
            self.session_id = self.payload["session_id"]

    @property
    def type_name(self) -> str:
        """The stored name of this task's type."""
        return type_name(self.task_type)

    def due_ms(self) -> int | None:
        """Absolute due time in epoch ms when ``run_at`` is set (``delay`` is resolved by
        Redis's clock at submit)."""
        return clock.to_ms(self.run_at) if self.run_at is not None else None


def AgentTask(payload: dict[str, Any] | None = None, **kwargs: Any) -> Task:  # noqa: N802 - guide's name
    """A :class:`Task` of type ``AGENT_QUERY`` (the guide's ``AgentTask``)."""
    kwargs.setdefault("task_type", TaskType.AGENT_QUERY)
    return Task(payload=payload or {}, **kwargs)


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
