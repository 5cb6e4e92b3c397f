"""``TaskQueue``: the public API for submitting and steering tasks (its reads are
``QueueReader``'s, engine/reads.py).

Layers, lowest first (docs/ARCHITECTURE.md draws them): models, keys, clock, errors,
config, serialization, validation; the wire and the store; the reads; this module; batches,
CSV jobs and schedules; the agent; the worker. Imports point down only.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, Sequence

import redis

from . import clock
from .batch_reads import child_ids, child_statuses
from .access import acting_as
from .config import Settings
from .connection import connect, connect_settings
from .crypto import sealer_for
from .errors import (ConfigurationError, InvalidTransition, TaskNotFound, TaskTimeout,
                     ValidationError, raise_for_code, translate_redis_errors)
from .events import EventSubscription
from .keys import Keys
from .limits import LimitVerbs
from .models import Task, TaskPriority, TaskStatus, TERMINAL_STATUSES
from .reads import status_name
from .usage import QueueUsage
from .views import QueueViews
from .serialization import dumps
from .store import REAP_CHUNK, Store, accepted_ids
from .submission import payload_text, submit_row
from .validation import check_id, check_ids, check_seconds, check_text

SUBMIT_CHUNK = 500           # tasks per script call in bulk submits (500 measured best: finer overlap)
WAIT_SLICE_SECONDS = 2.0     # longest single blocking call (see docs/ARCHITECTURE.md)
MAX_WAIT_SECONDS = 366 * 86400   # wait_for_result's longest finite timeout (None: for ever)
_CHILD_CHUNK = 1000          # batch children acted on per pipeline
_UNFINISHED = ("pending", "scheduled", "retry", "running")

# Task types that fan out into other tasks when submitted, by type name: the batch module
# (above this one) registers BATCH_QUERY here, so the queue never imports it.
FanOut = Callable[["TaskQueue", Task], str]
_FAN_OUTS: dict[str, FanOut] = {}


def register_fan_out(task_type: str, submit: FanOut) -> None:
    """Make ``submit_task`` hand tasks of ``task_type`` to ``submit(queue, task)``."""
    _FAN_OUTS[task_type] = submit


class TaskQueue(QueueViews, QueueUsage, LimitVerbs):
    """A task queue in one Redis namespace: its write verbs here, its reads inherited from
    :class:`engine.reads.QueueReader`, :class:`engine.views.QueueViews` (the console's) and
    :class:`engine.usage.QueueUsage` (tokens, cost and budgets).

    Build it with :func:`get_task_queue` (from the environment), :meth:`from_url`, or from
    a redis-py client. ``clock`` (tests only) replaces Redis ``TIME`` in every script.
    """

    def __init__(self, client: redis.Redis | None = None, *, settings: Settings | None = None,
                 namespace: str | None = None, clock: Any = None):
        self.settings = settings or Settings.from_env()
        self.client = client if client is not None else connect_settings(self.settings)
        self.keys = Keys(namespace or self.settings.namespace)
        self.clock = clock
        self.store = Store(self.client, self.keys, self.settings,
                           now_ms=clock.now_ms if clock is not None else None)
        self.sealer = sealer_for(self.settings)     # None unless QUEUE_ENCRYPTION_KEYS (engine/crypto.py)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "TaskQueue":
        """A queue on the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``)."""
        settings = kwargs.pop("settings", None) or Settings.from_env()
        return cls(connect(url, ssl_ca_certs=settings.redis_ssl_ca_certs,
                           cluster=settings.redis_cluster), settings=settings, **kwargs)

    @property
    def namespace(self) -> str:
        """The namespace every key of this queue lives under."""
        return self.keys.namespace

    # -- submitting ---------------------------------------------------------------------
    def submit_task(self, task: Task) -> str:
        """Submit one task (one round trip); returns its id. Raises ValidationError (and
        writes nothing) for bad input."""
        fan_out = _FAN_OUTS.get(task.type_name) if _FAN_OUTS and isinstance(task, Task) else None
        if fan_out is not None:
            return fan_out(self, task)
        row = submit_row(task, self.settings, self.sealer)
        with translate_redis_errors():
            return accepted_ids(self.store.submit([row]), [task])[0]

    def submit_tasks(self, tasks: Iterable[Task]) -> list[str]:
        """Submit many tasks: every task is validated first (nothing is written if any is
        bad), then they stream to Redis in chunks of 500 per script call, in one
        pipelined round trip that overlaps encoding the next chunk with Redis running
        the last."""
        tasks = list(tasks)
        if any(isinstance(t, Task) and t.type_name in _FAN_OUTS for t in tasks):
            raise ValidationError("submit batches with submit_task, one at a time")
        payloads = [payload_text(t, self.settings) for t in tasks]   # every check before any write
        if not tasks:
            return []
        # The rest of each row is built chunk by chunk while Redis runs the chunk before.
        chunks = ([submit_row(t, self.settings, self.sealer, payload=p)
                   for t, p in zip(tasks[i:i + SUBMIT_CHUNK], payloads[i:i + SUBMIT_CHUNK])]
                  for i in range(0, len(tasks), SUBMIT_CHUNK))
        count = -(-len(tasks) // SUBMIT_CHUNK)
        with translate_redis_errors():
            replies = self.store.submit_streamed(chunks, count)
        return accepted_ids([task_id for reply in replies for task_id in reply], tasks)


    def wait_for_result(self, task_id: str, timeout: float | None = 30.0) -> dict[str, Any]:
        """Block until the task finishes and return its result document.

        Woken by the finishing script itself (no polling interval); raises TaskTimeout
        after ``timeout`` seconds (None = wait forever) and TaskNotFound for an unknown id.
        """
        check_id(task_id)
        if timeout is not None:
            timeout = check_seconds(timeout, "timeout", MAX_WAIT_SECONDS)
        deadline = None if timeout is None else clock.monotonic() + timeout
        with translate_redis_errors():
            while True:
                left = WAIT_SLICE_SECONDS if deadline is None else deadline - clock.monotonic()
                # The read is BRPOPLPUSH onto the same list: it does not consume, so every
                # waiter on the task sees the document. (fakeredis's BLMOVE does not block.)
                status, doc = self.store.wait_and_read(task_id, max(0.01, min(left, WAIT_SLICE_SECONDS)))
                if not status:
                    raise TaskNotFound(f"task {task_id} not found")
                if doc:
                    return self.result_document(task_id, doc)
                if deadline is not None and clock.monotonic() >= deadline:
                    raise TaskTimeout(f"task {task_id} still {status} after {timeout} s")


    # -- steering -----------------------------------------------------------------------
    def cancel_task(self, task_id: str, reason: str = "cancelled by request",
                    by: str = "") -> str:
        """Cancel an unfinished task; returns the status it had. Raises TaskNotFound, or
        InvalidTransition for a finished task. A running task's worker hears of it at once
        and stops its handler (engine/cancels.py). ``by`` (who) and ``reason`` (why) are
        kept with the task and in its result document."""
        check_id(task_id)
        reason, by = check_text(reason, "reason"), check_text(by, "by") if by else ""
        doc = dumps({"task_id": task_id, "status": "cancelled", "result": None,
                     "error": reason, "reason": "cancelled", "cancelled_by": by or None,
                     "duration": None, "attempts": None})
        if self._is_batch_parent(task_id):
            self.cancel_batch(task_id)
            return "running"
        with translate_redis_errors():
            code, previous = self.store.cancel(task_id, doc, by=by, why=reason)
        raise_for_code(int(code), task_id, "cancel", previous)
        return previous

    def retry_task(self, task_id: str, priority: Any = None) -> str:
        """Run a failed or cancelled task again, with a fresh retry budget. For a batch:
        its failed and cancelled children."""
        check_id(task_id)
        if self._is_batch_parent(task_id):
            self.retry_batch(task_id)
            return "running"
        return self._move(self.store.retry, task_id, priority, "retry")

    def _is_batch_parent(self, task_id: str) -> bool:
        with translate_redis_errors():
            try:
                return bool(self.client.hexists(self.keys.task(task_id), "total"))
            except redis.ResponseError:     # not a hash: the verb's script answers CorruptRecord
                return False

    def cancel_batch(self, batch_id: str) -> int:
        """Cancel a batch's unfinished children (the last one ends the batch as
        cancelled); returns how many were cancelled."""
        doc = dumps({"status": "cancelled", "result": None, "error": "batch cancelled",
                     "reason": "cancelled"})
        return self._act_on_children(batch_id, _UNFINISHED, "cancel",
                                     lambda task_id, pipe: self.store.cancel(
                                         task_id, doc, client=pipe, why="batch cancelled"))

    def retry_batch(self, batch_id: str) -> int:
        """Run a batch's failed and cancelled children again; returns how many."""
        return self._act_on_children(batch_id, ("failed", "cancelled"), "retry",
                                     lambda task_id, pipe: self.store.retry(task_id, client=pipe))

    def _act_on_children(self, batch_id: str, statuses: Sequence[str], verb: str,
                         act: Callable[[str, Any], Any]) -> int:
        ids = child_ids(self, batch_id)
        targets = [i for i, status in zip(ids, child_statuses(self, ids)) if status in statuses]
        with translate_redis_errors():
            for start in range(0, len(targets), _CHILD_CHUNK):
                pipe = self.store.script_pipeline()
                for task_id in targets[start:start + _CHILD_CHUNK]:
                    act(task_id, pipe)
                pipe.execute()
        if not targets:
            raise InvalidTransition(f"cannot {verb} batch {batch_id}: no child is "
                                    f"{' or '.join(statuses)}")
        return len(targets)

    def requeue_task(self, task_id: str, priority: Any = None) -> str:
        """Put an unfinished task back in line now (optionally at another priority)."""
        check_id(task_id)
        return self._move(self.store.requeue, task_id, priority, "requeue")

    def _move(self, verb: Callable, task_id: str, priority: Any, name: str) -> str:
        level = str(int(TaskPriority.parse(priority))) if priority is not None else ""
        with translate_redis_errors():
            code, previous = verb(task_id, level)
        raise_for_code(int(code), task_id, name, previous)
        return previous

    def delete_tasks(self, task_ids: Sequence[str]) -> int:
        """Delete tasks and every trace of them; returns how many existed."""
        task_ids = check_ids(task_ids)
        deleted = 0
        with translate_redis_errors():
            for i in range(0, len(task_ids), 500):
                deleted += self.store.delete(task_ids[i:i + 500])
        return deleted

    def delete_task(self, task_id: str) -> bool:
        """Delete one task; False when there was none."""
        check_id(task_id)
        return self.delete_tasks([task_id]) == 1

    def purge(self, status: TaskStatus | str) -> int:
        """Delete every task of a finished status (completed, failed or cancelled)."""
        name = status_name(status)
        if TaskStatus(name) not in TERMINAL_STATUSES:
            raise ValidationError(f"purge takes a finished status (completed, failed, cancelled), not {name}")
        total = 0
        with translate_redis_errors():
            while True:
                ids = self.client.zrange(self.keys.status[name], 0, 499)
                if not ids:
                    return total
                total += self.store.delete(ids)

    def promote_due(self) -> int:
        """Move due scheduled and retry tasks to pending now; returns how many moved."""
        with translate_redis_errors():
            return self.store.promote()[0]

    def reap_expired_leases(self) -> tuple[int, int]:
        """Recover every task whose worker stopped heartbeating: (requeued, failed).

        In chunks (one script call each, so Redis is never held long), until no expired
        lease is left: after a mass crash the whole backlog comes back in one pass."""
        requeued = failed = 0
        with translate_redis_errors():
            while True:
                back, dead, _, handled = self.store.reap(int(self.settings.lease_timeout * 1000))
                requeued, failed = requeued + back, failed + dead
                if handled < REAP_CHUNK:
                    return requeued, failed

    # -- events -------------------------------------------------------------------------
    def subscribe_to_events(self, callback: Callable[[dict], Any]) -> EventSubscription:
        """Call ``callback(message)`` for every live event until ``.stop()``."""
        return EventSubscription(self.client, self.keys.events, callback)


    def acting_as(self, identity: Any) -> Any:
        """This queue as ``identity`` may use it (engine/access.py): reads pass; every
        state-changing verb checks the identity's role first and is written to the audit
        stream, refused calls included."""
        return acting_as(self, identity)

    def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(self.client.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False


_default_queue: TaskQueue | None = None
_default_lock = threading.Lock()


def get_task_queue(settings: Settings | None = None) -> TaskQueue:
    """The process-wide queue, built once from the environment (and ``.env``)."""
    global _default_queue
    with _default_lock:
        if _default_queue is None:
            settings = settings or Settings.from_env()
            if not settings.use_redis_queue:
                raise ConfigurationError("the Redis queue is switched off (USE_REDIS_QUEUE=false)")
            _default_queue = TaskQueue(settings=settings)
        return _default_queue


def reset_task_queue() -> None:
    """Forget the process-wide queue (tests, or after changing the environment)."""
    global _default_queue
    with _default_lock:
        _default_queue = None
