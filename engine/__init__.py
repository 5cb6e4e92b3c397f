"""A Redis task queue for agent (LLM) work.

The public API, under the names the guide uses::

    from engine import (Task, AgentTask, TaskType, TaskPriority, TaskStatus, QueueStats,
                        TaskQueue, TaskWorker, TaskScheduler, get_task_queue)
"""
from . import batch  # noqa: F401 - registers the batch fan-out with the queue (engine/batch_submit.py)
from .config import Settings
from .errors import (ConfigurationError, CorruptRecord, IdempotencyConflict, InvalidTransition,
                     LeaseLost, NoHandler, PayloadTooLarge, PermanentError, QueueError,
                     QueueUnavailable, RedisRefused, RetryableError, ScheduleNotFound,
                     TaskNotFound, TaskTimeout, ValidationError)
from .models import (ACTIVE_STATUSES, TERMINAL_STATUSES, AgentTask, Backoff, QueueStats,
                     RunningTask, Task, TaskPriority, TaskStatus, TaskType)
from .queue import TaskQueue, get_task_queue, reset_task_queue
from .scheduler import TaskScheduler
from .worker import TaskWorker

__all__ = [
    "ACTIVE_STATUSES", "TERMINAL_STATUSES", "AgentTask", "Backoff", "ConfigurationError",
    "CorruptRecord", "IdempotencyConflict",
    "InvalidTransition", "LeaseLost", "NoHandler", "PayloadTooLarge", "PermanentError",
    "QueueError", "QueueStats", "QueueUnavailable", "RedisRefused", "RetryableError", "RunningTask",
    "ScheduleNotFound", "Settings",
    "Task", "TaskNotFound", "TaskPriority", "TaskQueue", "TaskScheduler", "TaskStatus",
    "TaskTimeout", "TaskType", "TaskWorker", "ValidationError", "get_task_queue",
    "reset_task_queue",
]
