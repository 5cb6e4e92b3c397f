"""``TaskWorker``: claims tasks, runs their handlers, reports outcomes, keeps leases alive.

Throughput comes from batching, not from cutting corners: a worker claims many tasks in
one script call when they are quick (the batch adapts to the handlers' measured run time,
so slow LLM tasks are claimed one slot at a time and never hoarded), and reports all the
outcomes of a batch in one call per kind. Every claimed task is covered by a lease that
the heartbeat thread renews; a worker that dies loses its leases and the reaper hands its
tasks to others.
"""
from __future__ import annotations

import json
import logging
import os
import queue as queue_module
import random
import socket
import threading
import time
import traceback
import uuid
from typing import Any, Callable

import redis

from . import clock
from .crypto import open_claimed_payload
from .errors import (CLUSTER_OUTAGE_ERRORS, REFUSAL_ERRORS, CorruptRecord, NoHandler, PermanentError,
                     QueueUnavailable, RedisRefused, ValidationError, refusal)
from .models import RunningTask, TaskPriority, TaskType, retry_policy, type_name
from .policies import retry_delay_ms
from .queue import TaskQueue, get_task_queue
from .scheduler import fire_due_schedules
from .serialization import dumps
from .validation import MAX_DELAY_SECONDS, check_id, check_text

log = logging.getLogger("engine.worker")

Handler = Callable[[RunningTask], Any]
CLAIM_FIELDS = 13               # values per task in claim.lua's reply
BLOCK_SLICE_SECONDS = 1.0       # longest wait on the wake-up marker (see DESIGN.md traps)
BATCH_WINDOW_SECONDS = 0.05     # how much work a prefetched batch may hold, in run time
MAX_ERROR_CHARS = 10_000        # of a failed task's error message (its traceback: 20,000)
# Redis gone, or refusing writes for a while (QueueUnavailable covers RedisRefused;
# REFUSAL_ERRORS are refusals that reach us untranslated, e.g. on Redis Cluster), or a
# Redis Cluster between states (CLUSTER_OUTAGE_ERRORS): the worker keeps what it holds
# and retries with backoff.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, QueueUnavailable, *REFUSAL_ERRORS,
              *CLUSTER_OUTAGE_ERRORS)


class _Abort(BaseException):
    """Raised into an inline handler by a second stop signal (BaseException so handlers'
    ``except Exception`` blocks do not swallow it)."""


def running_task(values: list) -> RunningTask:
    """One task of claim.lua's reply (CLAIM_FIELDS values) as a RunningTask. claim.lua has
    checked what the scripts compute with (status, type, priority, attempt, fence); every
    field parsed here is checked here. Raises CorruptRecord naming the field."""
    (task_id, token, task_type, priority, payload, attempt, max_retries, retry_delay,
     backoff, max_retry_delay, session, timeout, created_at) = values
    field = "payload (not a JSON object)"
    try:
        body = json.loads(payload)
        if not isinstance(body, dict):
            raise ValueError(field)
        field = "timeout (not a number of seconds > 0)"
        seconds = float(timeout) if timeout else None
        if seconds is not None and not 0 < seconds < float("inf"):
            raise ValueError(field)
        field = "max_retries"
        retries = _count(max_retries)
        field = "created_at"
        created = _count(created_at)
        field = "backoff"
        if backoff not in _BACKOFFS:
            raise ValueError(field)
        field = "retry_delay"
        _count(retry_delay, optional=True)
        field = "max_retry_delay"
        _count(max_retry_delay, optional=True)
        policy = retry_policy(retry_delay, backoff, max_retry_delay)
    except (TypeError, ValueError, RecursionError):
        raise CorruptRecord(f"corrupt record: {field}") from None
    task = RunningTask(task_id=task_id, task_type=task_type, payload=body,
                       priority=TaskPriority(int(priority)), attempt=int(attempt),
                       max_retries=retries, session_id=session or None,
                       created_at_ms=created, timeout=seconds, token=str(token))
    task.extra = policy
    return task


_BACKOFFS = (None, "fixed", "exponential")


def _count(text: str | None, optional: bool = False) -> int | None:
    """A stored whole number >= 0 (digits only, as the engine writes them)."""
    if text is None and optional:
        return None
    if not isinstance(text, str) or not text.isdigit() or not text.isascii():
        raise ValueError(text)
    return int(text)


def _error_text(exc: BaseException) -> str:
    """The error a failed task records: ``Type: message`` (the message alone for a
    missing handler), at most MAX_ERROR_CHARS, writable whatever the exception holds."""
    try:
        message = str(exc)
    except Exception:  # an exception whose __str__ fails must not take the worker with it
        message = "(its message could not be read)"
    if isinstance(exc, NoHandler):
        return _writable(message[:MAX_ERROR_CHARS])
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return _writable(text[:MAX_ERROR_CHARS])


def _writable(text: str) -> str:
    """``text`` with any lone surrogate (from a handler's exception) written as an escape:
    Redis takes UTF-8 only, and an unwritable error would stop the worker's reports."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def new_worker_id() -> str:
    """``worker-`` + 8 hex digits, as the guide's banner shows."""
    return "worker-" + uuid.uuid4().hex[:8]


class TaskWorker:
    """A worker process's engine: ``register_handler`` then ``start``.

    ``concurrency`` is the number of handler slots. With 1, handlers run in the calling
    thread and quick tasks are claimed and reported in batches; with more, each slot is a
    thread (for I/O-bound handlers such as LLM calls) and outcomes are reported by a
    writer thread that batches whatever has finished.
    """

    def __init__(self, queue: TaskQueue | None = None, concurrency: int = 1, *,
                 name: str | None = None, worker_id: str | None = None, max_batch: int = 256,
                 handlers: dict[TaskType | str, Handler] | None = None,
                 heartbeat_interval: float | None = None):
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValidationError("concurrency must be a whole number >= 1")
        self.queue = queue or get_task_queue()
        self.store = self.queue.store
        self.concurrency = concurrency
        # Both are stored, shown in the console and written into events and results.
        self.worker_id = new_worker_id() if worker_id is None else check_id(worker_id, "worker_id")
        self.name = self.worker_id if name is None else check_text(name, "name")
        self.max_batch = max(1, max_batch)
        self.heartbeat_interval = heartbeat_interval or self.queue.settings.heartbeat_interval
        self._handlers: dict[str, Handler] = {}
        for task_type, fn in (handlers or {}).items():
            self.register_handler(task_type, fn)
        self.stats = {"processed": 0, "failed": 0, "retried": 0, "lost": 0}
        self._held: dict[str, RunningTask] = {}         # claimed and not yet reported
        self._unwritten: list[tuple] = []                # outcomes Redis has not taken yet
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._left = threading.Event()   # set once the worker has left; ends the heartbeat
        self._beat_lock = threading.Lock()
        self._aborting = False
        self._in_handler = False
        self._avg_run = 0.0                              # EWMA of handler seconds
        self._next_promote = 0.0
        self._started_ms = clock.now_ms()
        self._state = "starting"
        self._outcomes: queue_module.Queue = queue_module.Queue()
        self._work: queue_module.Queue = queue_module.Queue()
        self._free = concurrency
        self._slots = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._redis_down_since: float | None = None     # the outage under way, if any
        self._flush_failed = False                       # Redis refused the last outcomes
        self._claimed = 0                                # tasks the last claim returned
        self._backoff = 0.1                              # seconds; doubles while Redis is down

    # -- handlers -----------------------------------------------------------------------
    def register_handler(self, task_type: TaskType | str, fn: Handler) -> None:
        """Run ``fn(task)`` for tasks of ``task_type``; its return value (JSON-serialisable)
        becomes the task's result."""
        if not callable(fn):
            raise ValidationError(f"handler for {task_type!r} is not callable")
        self._handlers[type_name(task_type)] = fn

    def handler(self, task_type: TaskType | str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register_handler`."""
        def decorate(fn: Handler) -> Handler:
            self.register_handler(task_type, fn)
            return fn
        return decorate

    @property
    def in_flight(self) -> int:
        """How many claimed tasks this worker holds (running, or waiting for a slot or for
        their outcome to be written)."""
        return len(self._held)     # a dict's len: safe to read from any thread

    @property
    def handler_types(self) -> list[str]:
        """Task types this worker can run."""
        return sorted(self._handlers)

    # -- life cycle ---------------------------------------------------------------------
    def start(self, burst: bool = False) -> dict[str, int]:
        """Run until :meth:`stop` (or a signal), or with ``burst`` until nothing is due.
        Returns the worker's counters."""
        self._stopping.clear()
        self._left.clear()
        self._aborting = False
        self._state = "running"
        self._register()
        if self._stopping.is_set():
            return dict(self.stats)
        if self.on_ready is not None:
            self.on_ready()
        beat = threading.Thread(target=self._heartbeat_loop, name=f"{self.worker_id}-heartbeat",
                                daemon=True)
        beat.start()
        if self.concurrency > 1:
            self._start_slot_threads()
        try:
            self._run_loop(burst)
        except _Abort:
            pass
        finally:
            self._shut_down()
        return dict(self.stats)

    on_ready: Callable[[], None] | None = None   # called once registered (the CLI prints "ready")
    # engine.observability.WorkerMetrics when metrics are served: told of claims and outcomes.
    observer: Any = None

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for (the worker may still be finishing tasks)."""
        return self._stopping.is_set()

    def _register(self) -> None:
        """First heartbeat (announces the worker); waits out a Redis outage with backoff."""
        while not self._stopping.is_set():
            try:
                self._heartbeat_now()
                self._redis_back()
                return
            except REDIS_DOWN as exc:
                self._note_redis_down(exc)
                self._back_off()

    def stop(self) -> None:
        """Stop claiming; finish the tasks in hand, hand back the ones not started, leave."""
        self._stopping.set()
        self._state = "stopping"
        with self._slots:
            self._slots.notify_all()

    def abort(self) -> None:
        """Stop now: hand every unfinished task back to the queue and leave."""
        self._aborting = True
        self.stop()
        if self._in_handler and threading.current_thread() is threading.main_thread():
            raise _Abort()

    def process_one(self) -> bool:
        """Claim and run at most one task, and report it (for tests and step-by-step use).
        Returns whether a task was run."""
        self._promote_if_due(force=True)
        batch = self._claim(1)
        for task in batch:
            self._record(self._execute(task))
        self._flush()
        return bool(batch)

    # -- main loop ----------------------------------------------------------------------
    def _run_loop(self, burst: bool) -> None:
        drained = False    # the last claim got fewer tasks than asked: the queues were empty
        while not self._stopping.is_set():
            try:
                if self._outcomes_stuck():
                    self._back_off()
                    continue
                free = self._wait_for_free_slot()
                if free == 0:
                    continue
                if not drained:
                    want = self._batch_size(free)
                    batch = self._claim(want)
                    drained = self._claimed < want
                    if batch:
                        self._dispatch(batch)
                        self._promote_if_due(force=False)
                        continue
                # Nothing to claim: due scheduled tasks may be waiting to be promoted.
                if self._promote_if_due(force=burst):
                    drained = False
                elif burst:
                    if self._idle():
                        return
                    self._wait_in_flight(0.05)
                else:
                    # Any submit (or a claim that left work behind) sets the marker. The
                    # claim rides in the same round trip as the wait: Redis runs it the
                    # moment the marker wakes us.
                    want = self._batch_size(free)
                    batch = self._wait_for_work(want)
                    drained = self._claimed < want
                    if batch:
                        self._dispatch(batch)
                self._redis_back()
            except REDIS_DOWN as exc:
                self._note_redis_down(exc)
                self._back_off()
                drained = False

    def _outcomes_stuck(self) -> bool:
        """Whether outcomes wait that Redis would not take. Claiming then would only pile
        up more of them in memory: a claim's LPOP is allowed when Redis is out of memory
        while the writes of complete and fail are refused."""
        if self.concurrency == 1:
            return bool(self._unwritten) and not self._flush()
        return self._flush_failed      # the writer thread retries; the claim loop waits

    def _batch_size(self, free: int) -> int:
        if self.concurrency > 1 or self._avg_run <= 0:
            return free
        # Claim as many quick tasks as fit in a short window of run time: prefetching is
        # free throughput for no-op tasks and never hoards slow ones.
        return max(1, min(self.max_batch, int(BATCH_WINDOW_SECONDS / max(self._avg_run, 1e-6))))

    def _claim(self, count: int) -> list[RunningTask]:
        flat = self.store.claim(self.worker_id, count, self.handler_types)
        self._redis_back()
        return self._hold(flat)

    def _hold(self, flat: list) -> list[RunningTask]:
        """claim.lua's reply as tasks, now held by this worker. A task whose record the
        worker cannot use (claim.lua checked the fields it reads; the payload's JSON and the
        timeout are checked here) is dead-lettered, never handed to a handler, and never
        allowed to stop the worker."""
        tasks, corrupt = [], []
        self._claimed = len(flat) // CLAIM_FIELDS     # a short claim means the lists are empty
        sealer = self.queue.sealer                    # None unless payloads are encrypted
        for i in range(0, len(flat), CLAIM_FIELDS):
            values = flat[i:i + CLAIM_FIELDS]
            try:
                if sealer is not None:
                    values[4] = open_claimed_payload(sealer, values[4])
                tasks.append(running_task(values))
            except CorruptRecord as exc:
                corrupt.append(self._corrupt_outcome(values, str(exc)))
        with self._lock:
            for task in tasks:
                self._held[task.task_id] = task
            for outcome in corrupt:
                self._held[outcome[1].task_id] = outcome[1]
        if self.observer is not None:
            self.observer.claimed(tasks)
        for outcome in corrupt:
            self._report(outcome)
        return tasks

    def _corrupt_outcome(self, values: list, error: str) -> tuple:
        """A final failure, with no retry, for a claimed task whose record is unusable."""
        task = RunningTask(task_id=values[0], task_type=values[2], payload={},
                           priority=TaskPriority.NORMAL, attempt=0, max_retries=0,
                           token=str(values[1]))
        log.warning("%s: task %s dead-lettered: %s", self.worker_id, task.task_id, error)
        doc = dumps({"task_id": task.task_id, "status": "failed", "result": None, "error": error,
                     "duration": 0, "attempts": 0, "worker_id": self.worker_id})
        return ("fail", task, error, "", -1, doc)

    def _report(self, outcome: tuple) -> None:
        """Hand an outcome to whoever writes outcomes: the writer thread when there are
        slot threads, else the buffer the inline path flushes."""
        if self.concurrency > 1 and self._threads:
            self._outcomes.put(outcome)
        else:
            self._record(outcome)

    def _dispatch(self, batch: list[RunningTask]) -> None:
        if self.concurrency > 1:
            with self._slots:
                self._free -= len(batch)
            for task in batch:
                self._work.put(task)
            return
        for index, task in enumerate(batch):
            if self._stopping.is_set():
                self._release(batch[index:])
                break
            self._record(self._execute(task))
        self._flush()

    # -- running a handler --------------------------------------------------------------
    def _execute(self, task: RunningTask) -> tuple:
        started = time.perf_counter()
        fn = self._handlers.get(task.task_type)
        try:
            if fn is None:
                raise NoHandler(f"no handler for task type {task.task_type}")
            self._in_handler = True
            try:
                result = fn(task)
            finally:
                self._in_handler = False
            elapsed = time.perf_counter() - started
            try:
                # The whole document in one encoding (never text pasted into a template,
                # which a quote in any part would break); the size limit is on what is stored.
                if self.queue.sealer is not None:     # encrypted at rest (engine/crypto.py)
                    result = self.queue.sealer.seal_value(result)
                doc = dumps({"task_id": task.task_id, "status": "completed", "result": result,
                             "error": None, "duration": round(elapsed, 6),
                             "attempts": task.attempt, "worker_id": self.worker_id},
                            "result", self.queue.settings.max_result_bytes)
            except ValidationError as exc:
                raise PermanentError(f"handler returned an unusable result: {exc}") from None
        except _Abort:
            raise
        except Exception as exc:  # a handler's failure is the task's, never the worker's
            return self._failure(task, exc, time.perf_counter() - started)
        self._avg_run = elapsed if self._avg_run <= 0 else 0.9 * self._avg_run + 0.1 * elapsed
        return ("ok", task, doc, int(elapsed * 1000))

    def _failure(self, task: RunningTask, exc: Exception, elapsed: float) -> tuple:
        error = _error_text(exc)
        tb = _writable("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-20000:])
        policy = task.extra      # retry_policy(): defaults already filled in
        try:
            delay = retry_delay_ms(exc, task.attempt, policy["retry_delay"], policy["backoff"],
                                   policy["max_retry_delay"])
        except (TypeError, ValueError, OverflowError):   # a retry_after that is no number
            delay = retry_delay_ms(RuntimeError(), task.attempt, policy["retry_delay"],
                                   policy["backoff"], policy["max_retry_delay"])
        delay = min(delay, MAX_DELAY_SECONDS * 1000)    # a due time Redis can still store
        doc = dumps({"task_id": task.task_id, "status": "failed", "result": None, "error": error,
                     "duration": round(elapsed, 6), "attempts": task.attempt,
                     "worker_id": self.worker_id})
        return ("fail", task, error, tb, delay, doc)

    # -- reporting ----------------------------------------------------------------------
    def _record(self, outcome: tuple) -> None:
        if self.observer is not None:
            self.observer.finished(outcome)
        with self._lock:
            self._unwritten.append(outcome)

    def _flush(self) -> bool:
        """Write every unwritten outcome (one script call per kind). On a Redis outage
        they stay buffered for the next try: a result is written late, never dropped."""
        with self._lock:
            outcomes, self._unwritten = self._unwritten, []
        if not outcomes:
            return True
        done = [o for o in outcomes if o[0] == "ok"]
        failed = [o for o in outcomes if o[0] == "fail"]
        try:
            if done:
                codes = self.store.complete([(o[1].task_id, o[1].token, o[2], o[3]) for o in done])
                self._count(done, codes, {1: "processed"})
                done = []
            if failed:
                codes = self.store.fail([(o[1].task_id, o[1].token, o[2], o[3], o[4], o[5])
                                         for o in failed])
                self._count(failed, codes, {1: "failed", 2: "retried"})
        except REDIS_DOWN as exc:
            with self._lock:
                self._unwritten[:0] = done + failed
            self._flush_failed = True
            self._note_redis_down(exc)
            return False
        self._flush_failed = False
        self._redis_back()
        return True

    def _count(self, outcomes: list[tuple], codes: list[int], names: dict[int, str]) -> None:
        with self._lock:
            for outcome, code in zip(outcomes, codes):
                task = outcome[1]
                self._held.pop(task.task_id, None)
                name = names.get(int(code), "lost")
                self.stats[name] += 1
                if name == "lost":
                    log.warning("%s: task %s was no longer ours (lease lost, cancelled or "
                                "requeued); its outcome was discarded", self.worker_id, task.task_id)

    def _release(self, tasks: list[RunningTask]) -> None:
        if not tasks:
            return
        try:
            self.store.release([(t.task_id, t.token) for t in tasks])
        except REDIS_DOWN as exc:  # their leases will expire and the reaper returns them
            self._note_redis_down(exc)
        with self._lock:
            for task in tasks:
                self._held.pop(task.task_id, None)

    # -- waiting ------------------------------------------------------------------------
    def _wait_for_work(self, want: int) -> list[RunningTask]:
        timeout = BLOCK_SLICE_SECONDS
        if self._next_promote:
            timeout = min(timeout, max(0.001, self._next_promote - clock.monotonic()))
        woke, flat = self.store.wait_and_claim(self.worker_id, want, timeout, self.handler_types)
        self._redis_back()
        if woke:
            # A submit of a task due later also wakes us: learn its due time soon, but
            # after the claim, so a pending task's latency never waits on a promote.
            self._next_promote = min(self._next_promote, clock.monotonic() + 0.05)
        return self._hold(flat)

    def _promote_if_due(self, force: bool) -> int:
        now = clock.monotonic()
        if not force and now < self._next_promote:
            return 0
        moved, next_due_ms = self.store.promote()
        moved += len(fire_due_schedules(self.queue))   # recurring schedules (engine.scheduler)
        wait = 1.0 if next_due_ms < 0 else min(1.0, next_due_ms / 1000)
        self._next_promote = now + wait
        return moved

    def _wait_for_free_slot(self) -> int:
        if self.concurrency == 1:
            return 1
        with self._slots:
            if self._free == 0:
                self._slots.wait(timeout=BLOCK_SLICE_SECONDS)
            return self._free

    def _idle(self) -> bool:
        with self._lock:
            return not self._held and not self._unwritten

    def _wait_in_flight(self, seconds: float) -> None:
        if self.concurrency > 1:
            with self._slots:
                self._slots.wait(timeout=seconds)

    # -- slot threads (concurrency > 1) -------------------------------------------------
    def _start_slot_threads(self) -> None:
        self._threads = [threading.Thread(target=self._slot_loop, name=f"{self.worker_id}-slot{i}",
                                          daemon=True) for i in range(self.concurrency)]
        self._threads.append(threading.Thread(target=self._writer_loop,
                                              name=f"{self.worker_id}-writer", daemon=True))
        for thread in self._threads:
            thread.start()

    def _slot_loop(self) -> None:
        while True:
            task = self._work.get()
            if task is None:
                return
            if self._aborting:
                outcome = None
            else:
                outcome = self._execute(task)
            with self._slots:
                self._free += 1
                self._slots.notify_all()
            if outcome is not None:
                self._outcomes.put(outcome)

    def _writer_loop(self) -> None:
        while True:
            outcome = self._outcomes.get()
            if outcome is None:
                self._flush_retrying()
                return
            self._record(outcome)
            while True:
                try:
                    extra = self._outcomes.get_nowait()
                except queue_module.Empty:
                    break
                if extra is None:
                    self._outcomes.put(None)
                    break
                self._record(extra)
            self._flush_retrying()

    def _flush_retrying(self, seconds: float | None = None) -> None:
        """Flush, retrying with backoff while Redis is away, until everything is written,
        the worker aborts, or ``seconds`` have passed (None: no limit)."""
        deadline = None if seconds is None else clock.monotonic() + seconds
        delay = 0.1
        while not self._flush() and not self._aborting:
            left = None if deadline is None else deadline - clock.monotonic()
            if left is not None and left <= 0:
                return
            time.sleep(delay if left is None else min(delay, left))
            delay = min(5.0, delay * 2)

    # -- heartbeat ----------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        # Keeps beating while a graceful stop finishes the tasks in hand: their leases
        # must not lapse just because no new work is being claimed.
        while not self._left.wait(self.heartbeat_interval):
            try:
                with self._beat_lock:   # never beat after worker_stop: it would re-register us
                    if self._left.is_set():
                        return
                    self._heartbeat_now()
                self.queue.reap_expired_leases()
                self._redis_back()
            except REDIS_DOWN as exc:
                self._note_redis_down(exc)
            except Exception:  # never let the heartbeat thread die
                log.exception("%s: heartbeat failed", self.worker_id)

    def _heartbeat_now(self) -> None:
        with self._lock:
            held = [(t.task_id, t.token) for t in self._held.values() if not t.cancelled]
        lost = self.store.heartbeat(self.worker_id, self._worker_fields(len(held), held), held)
        with self._lock:
            for i in range(0, len(lost), 2):
                task = self._held.get(lost[i])
                if task is not None:
                    task.cancelled = True   # a cooperative handler can check this and stop

    def _worker_fields(self, in_hand: int, held: list[tuple[str, str]]) -> dict[str, Any]:
        return {"name": self.name, "host": socket.gethostname(), "pid": os.getpid(),
                "state": self._state, "concurrency": self.concurrency, "in_hand": in_hand,
                "processed": self.stats["processed"], "failed": self.stats["failed"],
                "retried": self.stats["retried"], "lost": self.stats["lost"],
                "started_at": self._started_ms, "handlers": ",".join(self.handler_types),
                "types": json.dumps(self.handler_types),   # for routing (claim.lua)
                "current": json.dumps([task_id for task_id, _ in held[:20]])}

    # -- outages ------------------------------------------------------------------------
    def _note_redis_down(self, exc: BaseException) -> None:
        if self._redis_down_since is None:
            self._redis_down_since = clock.monotonic()
            self._backoff = 0.1
            refused = exc if isinstance(exc, RedisRefused) else refusal(exc)
            if refused is not None:     # its message is ours: no URL, no password
                log.warning("%s: %s; retrying with backoff", self.worker_id, refused)
            else:
                log.warning("%s: Redis unreachable (%s); reconnecting with backoff",
                            self.worker_id, type(exc).__name__)

    def _redis_back(self) -> None:
        """Called after every call that reached Redis: ends the outage under way, so the
        time logged is the outage's, not the time until some later code path looked."""
        since = self._redis_down_since
        if since is not None:
            self._redis_down_since = None
            log.warning("%s: reconnected to Redis after %.1f s", self.worker_id,
                        clock.monotonic() - since)

    def _back_off(self) -> None:
        self._stopping.wait(self._backoff * random.uniform(0.5, 1.0))
        self._backoff = min(5.0, self._backoff * 2)

    # -- shutting down ------------------------------------------------------------------
    def _shut_down(self) -> None:
        self._stopping.set()
        self._state = "stopping"
        if self.concurrency > 1:
            self._drain_slots()
        if not self._aborting:
            self._flush_retrying(10.0)
        else:
            self._flush()
        with self._lock:
            unfinished = [t for t in self._held.values()
                          if not any(o[1] is t for o in self._unwritten)]
        self._release(unfinished)
        with self._beat_lock:
            self._left.set()
        try:
            self.store.worker_stop(self.worker_id, {
                "processed": self.stats["processed"], "failed": self.stats["failed"],
                "retried": self.stats["retried"], "lost": self.stats["lost"], "in_hand": 0})
        except REDIS_DOWN as exc:
            self._note_redis_down(exc)
        self._state = "stopped"

    def _drain_slots(self) -> None:
        # Tasks queued to slots but not started go back; running ones finish (graceful)
        # or are abandoned to the release below (abort).
        not_started = []
        while True:
            try:
                task = self._work.get_nowait()
            except queue_module.Empty:
                break
            if task is not None:
                not_started.append(task)
        self._release(not_started)
        with self._slots:
            self._free += len(not_started)
            while not self._aborting and self._free < self.concurrency:
                self._slots.wait(timeout=0.5)
        for _ in range(self.concurrency):
            self._work.put(None)
        self._outcomes.put(None)
        writer = self._threads[-1] if self._threads else None
        if writer is not None and not self._aborting:
            writer.join(timeout=30)
