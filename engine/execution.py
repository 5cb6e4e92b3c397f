"""Running a handler: the handler table, claimed tasks as RunningTasks, and outcomes.

An outcome is a small typed record (``Completed``, ``Failed`` or ``Deferred``) that the
worker's writer (engine/outcomes.py) hands to complete.lua, fail.lua or defer.lua.
Nothing here touches Redis.
A handler is a plain function (run in a thread) or an ``async def`` coroutine function
(run on the worker's event loop, engine/runners.py); both end in the same records.
A ``Failed`` outcome says why the task ended: ``error`` (the handler raised) or
``timeout`` (it ran past its timeout and was cancelled or abandoned).
"""
from __future__ import annotations

import inspect
import json
import logging
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from .crypto import Sealer
from .errors import CorruptRecord, NoHandler, PermanentError, RateLimited, ValidationError
from .limits import check_limit_key, defer_ms
from .models import RunningTask, TaskPriority, TaskType, retry_policy, type_name
from .policies import retry_delay_ms
from .serialization import dumps
from .validation import MAX_DELAY_SECONDS, MAX_TIMEOUT_SECONDS, check_seconds

log = logging.getLogger("engine.worker")

Handler = Callable[[RunningTask], Any]
CLAIM_FIELDS = 13               # values per task in claim.lua's reply
MAX_ERROR_CHARS = 10_000        # of a failed task's error message (its traceback: 20,000)
_BACKOFFS = (None, "fixed", "exponential")


class Abort(BaseException):
    """Raised into an inline handler by a second stop signal (BaseException so handlers'
    ``except Exception`` blocks do not swallow it)."""


@dataclass(slots=True)
class Completed:
    """A handler returned: ``doc`` is the result document (JSON) complete.lua stores."""

    task: RunningTask
    doc: str
    duration_ms: int
    usage: dict | None = None    # the result's token counts, when it reports them
    model: str | None = None     # the model the result names (its price: engine/pricing.py)
    ok = True


@dataclass(slots=True)
class Failed:
    """A handler raised (or the task could not run): fail.lua retries it after
    ``retry_delay_ms`` (-1: never) or dead-letters it with ``doc``."""

    task: RunningTask
    error: str
    traceback: str
    retry_delay_ms: int
    doc: str
    reason: str = "error"        # why the task ended: error or timeout (the task hash keeps it)
    ok = False


@dataclass(slots=True)
class Deferred:
    """A provider said "slow down" (the handler raised RateLimited): defer.lua puts the
    task back without spending an attempt, due in ``delay_ms``, and pauses ``limit_key``
    for every worker (parked on it when the task's type runs under it)."""

    task: RunningTask
    limit_key: str
    delay_ms: int
    error: str
    ok = False


Outcome = Completed | Failed | Deferred


class Handlers:
    """The handler of each task type, and how a task is run through it."""

    def __init__(self, worker_id: str, max_result_bytes: int, sealer: Sealer | None = None):
        self.worker_id = worker_id
        self.max_result_bytes = max_result_bytes
        self.sealer = sealer            # results encrypted at rest when set (engine/crypto.py)
        self.table: dict[str, Handler] = {}
        self.coroutine_types: set[str] = set()     # types whose handler is ``async def``
        self.timeouts: dict[str, float] = {}       # per-type default timeout, seconds
        self.limit_keys: dict[str, str] = {}       # per-type provider limit key (engine/limits.py)
        self.average_run = 0.0          # EWMA of handler seconds
        self.running_inline = False     # a handler runs in the thread that may be aborted

    def register(self, task_type: TaskType | str, fn: Handler,
                 timeout: float | None = None, limit: str | None = None) -> None:
        """Run ``fn(task)`` for tasks of ``task_type``: a plain function or an ``async def``
        one. ``timeout`` (seconds) bounds tasks of the type that name no timeout;
        ``limit`` names the provider limit key its calls run under."""
        if not callable(fn):
            raise ValidationError(f"handler for {task_type!r} is not callable")
        if timeout is not None:
            timeout = check_seconds(timeout, "timeout", MAX_TIMEOUT_SECONDS, zero=False)
        if limit is not None:
            limit = check_limit_key(limit)
        name = type_name(task_type)
        self.table[name] = fn
        self.coroutine_types.discard(name)
        self.timeouts.pop(name, None)
        self.limit_keys.pop(name, None)
        if limit is not None:
            self.limit_keys[name] = limit
        if is_coroutine_handler(fn):
            self.coroutine_types.add(name)
        if timeout is not None:
            self.timeouts[name] = float(timeout)

    @property
    def has_coroutines(self) -> bool:
        """Whether any handler is ``async def`` (the worker then runs an event loop)."""
        return bool(self.coroutine_types)

    def timeout_for(self, task: RunningTask) -> float | None:
        """The seconds ``task`` may run: its own timeout, else its type's default."""
        return task.timeout or self.timeouts.get(task.task_type)

    @property
    def types(self) -> list[str]:
        """Task types there is a handler for."""
        return sorted(self.table)

    @property
    def limits(self) -> list[tuple[str, str]]:
        """(task type, limit key) of the types that run under a provider limit."""
        return sorted(self.limit_keys.items())

    def run(self, task: RunningTask, inline: bool = False) -> Outcome:
        """Run the task's handler; a handler's failure is the task's, never the worker's."""
        started = time.perf_counter()
        fn = self.table.get(task.task_type)
        try:
            if fn is None:
                raise NoHandler(f"no handler for task type {task.task_type}")
            self.running_inline = inline
            try:
                result = fn(task)
            finally:
                self.running_inline = False
            elapsed = time.perf_counter() - started
            doc = self._result_document(task, result, elapsed)
        except Abort:
            raise
        except Exception as exc:
            return self.failure(task, exc, time.perf_counter() - started)
        self.average_run = elapsed if self.average_run <= 0 else 0.9 * self.average_run + 0.1 * elapsed
        return Completed(task, doc, int(elapsed * 1000), _usage(result), _model(result))

    async def run_coroutine(self, task: RunningTask) -> Outcome:
        """Await the task's ``async def`` handler (the event loop's :meth:`run`). A timeout
        or a cancel reaches it as ``CancelledError``, which the runner turns into the
        task's outcome."""
        started = time.perf_counter()
        try:
            result = await self.table[task.task_type](task)
            elapsed = time.perf_counter() - started
            doc = self._result_document(task, result, elapsed)
        except Exception as exc:
            return self.failure(task, exc, time.perf_counter() - started)
        self.average_run = elapsed if self.average_run <= 0 else 0.9 * self.average_run + 0.1 * elapsed
        return Completed(task, doc, int(elapsed * 1000), _usage(result), _model(result))

    def timed_out(self, task: RunningTask, seconds: float) -> Failed:
        """The outcome of a task whose handler ran past ``seconds``: retried after the
        task's usual delay while attempts are left, else failed, with reason ``timeout``."""
        exc = TimeoutError(f"the handler ran past the task's timeout of {seconds:g} s")
        outcome = self.failure(task, exc, seconds, reason="timeout")
        outcome.traceback = ""
        return outcome

    def _result_document(self, task: RunningTask, result: Any, elapsed: float) -> str:
        # The whole document in one encoding (never text pasted into a template, which a
        # quote in any part would break); the size limit is on what is stored.
        try:
            if self.sealer is not None:
                result = self.sealer.seal_value(result)
            return dumps({"task_id": task.task_id, "status": "completed", "result": result,
                          "error": None, "duration": round(elapsed, 6),
                          "attempts": task.attempt, "worker_id": self.worker_id},
                         "result", self.max_result_bytes)
        except ValidationError as exc:
            raise PermanentError(f"handler returned an unusable result: {exc}") from None

    def failure(self, task: RunningTask, exc: Exception, elapsed: float,
                reason: str = "error") -> Failed | Deferred:
        """The outcome of a handler that raised ``exc`` after ``elapsed`` seconds (a
        provider's "slow down" defers the task instead: not a failed attempt)."""
        error = error_text(exc)
        if isinstance(exc, RateLimited):
            signal = exc.signal if exc.signal is not None else task.provider_signal
            task.provider_signal = signal
            key = task.limit_key or exc.limit_key or f"type {task.task_type}"
            return Deferred(task, key, defer_ms(signal, exc.retry_after), error)
        tb = writable("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-20000:])
        policy = task.extra      # retry_policy(): defaults already filled in
        try:
            delay = retry_delay_ms(exc, task.attempt, policy["retry_delay"], policy["backoff"],
                                   policy["max_retry_delay"])
        except (TypeError, ValueError, OverflowError):   # a retry_after that is no number
            delay = retry_delay_ms(RuntimeError(), task.attempt, policy["retry_delay"],
                                   policy["backoff"], policy["max_retry_delay"])
        delay = min(delay, MAX_DELAY_SECONDS * 1000)    # a due time Redis can still store
        doc = dumps({"task_id": task.task_id, "status": "failed", "result": None, "error": error,
                     "reason": reason, "duration": round(elapsed, 6), "attempts": task.attempt,
                     "worker_id": self.worker_id})
        return Failed(task, error, tb, delay, doc, reason)

    def corrupt(self, values: list, error: str) -> Failed:
        """A final failure, with no retry, for a claimed task whose record is unusable."""
        task = RunningTask(task_id=values[0], task_type=values[2], payload={},
                           priority=TaskPriority.NORMAL, attempt=0, max_retries=0,
                           token=str(values[1]))
        log.warning("%s: task %s dead-lettered: %s", self.worker_id, task.task_id, error)
        doc = dumps({"task_id": task.task_id, "status": "failed", "result": None, "error": error,
                     "duration": 0, "attempts": 0, "worker_id": self.worker_id})
        return Failed(task, error, "", -1, doc, "corrupt")


def _usage(result: Any) -> dict | None:
    """The token counts a handler's result reports (``{"usage": {...}}``, as the agent's
    backends return), else None."""
    usage = result.get("usage") if isinstance(result, dict) else None
    return usage if isinstance(usage, dict) and usage else None


def _model(result: Any) -> str | None:
    """The model a handler's result names (``{"model": ...}``), else None."""
    model = result.get("model") if isinstance(result, dict) else None
    return model if isinstance(model, str) else None


def is_coroutine_handler(fn: Any) -> bool:
    """Whether calling ``fn`` gives a coroutine: an ``async def`` function, or an object
    whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None))


def running_task(values: list, worker: Any = None) -> RunningTask:
    """One task of claim.lua's reply (CLAIM_FIELDS values) as a RunningTask. claim.lua has
    checked what the scripts compute with (status, type, priority, attempt, fence); every
    field parsed here is checked here. Raises CorruptRecord naming the field."""
    (task_id, token, task_type, priority, payload, attempt, max_retries, retry_delay,
     backoff, max_retry_delay, session, timeout, created_at) = values
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise CorruptRecord("corrupt record: payload (not a JSON object)")
    # The usual record, checked in one expression (a worker parses tens of thousands a
    # second); anything else is looked at field by field, to name the one at fault.
    try:
        usual = (max_retries.isdecimal() and created_at.isdecimal() and not timeout
                 and backoff in _BACKOFFS and (retry_delay is None or retry_delay.isdecimal())
                 and (max_retry_delay is None or max_retry_delay.isdecimal()))
    except AttributeError:      # a field that is missing (None)
        usual = False
    if not usual:
        _refuse_unusable(max_retries, created_at, timeout, backoff, retry_delay, max_retry_delay)
    task = RunningTask(task_id=task_id, task_type=task_type, payload=body,
                       priority=TaskPriority(int(priority)), attempt=int(attempt),
                       max_retries=int(max_retries), session_id=session or None,
                       created_at_ms=int(created_at), timeout=float(timeout) if timeout else None,
                       token=str(token), worker=worker)
    task.extra = retry_policy(retry_delay, backoff, max_retry_delay)
    return task


def _refuse_unusable(max_retries: Any, created_at: Any, timeout: Any, backoff: Any,
                     retry_delay: Any, max_retry_delay: Any) -> None:
    """Raise CorruptRecord naming the first field running_task cannot use (returns when
    every field is usable: a record with a timeout, say)."""
    try:
        seconds = float(timeout) if timeout else 1.0
    except ValueError:
        seconds = -1.0
    checks = (("max_retries", _is_count(max_retries)), ("created_at", _is_count(created_at)),
              ("timeout (not a number of seconds > 0)", 0 < seconds < float("inf")),
              ("backoff", backoff in _BACKOFFS),
              ("retry_delay", retry_delay is None or _is_count(retry_delay)),
              ("max_retry_delay", max_retry_delay is None or _is_count(max_retry_delay)))
    for field, usable in checks:
        if not usable:
            raise CorruptRecord(f"corrupt record: {field}")


def _is_count(text: Any) -> bool:
    """A stored whole number >= 0 (decimal digits only: what int() reads, never raising)."""
    return isinstance(text, str) and text.isdecimal()


def error_text(exc: BaseException) -> str:
    """The error a failed task records: ``Type: message`` (the message alone for a
    missing handler), at most MAX_ERROR_CHARS, writable whatever the exception holds."""
    try:
        message = str(exc)
    except Exception:  # an exception whose __str__ fails must not take the worker with it
        message = "(its message could not be read)"
    if isinstance(exc, NoHandler):
        return writable(message[:MAX_ERROR_CHARS])
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return writable(text[:MAX_ERROR_CHARS])


def writable(text: str) -> str:
    """``text`` with any lone surrogate (from a handler's exception) written as an escape:
    Redis takes UTF-8 only, and an unwritable error would stop the worker's reports."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
