"""``TaskWorker``: claims tasks and hands them to its parts to run, report and keep alive.

Throughput comes from batching, not from cutting corners: a worker claims many tasks in
one script call when they are quick (the batch adapts to the handlers' measured run time,
so slow LLM tasks are claimed one slot at a time and never hoarded), and reports all the
outcomes of a batch in one call per kind. Every claimed task is covered by a lease that
the heartbeat renews; a worker that dies loses its leases and the reaper hands its tasks
to others.

The parts (docs/ARCHITECTURE.md draws them): the claim loop here; a runner per execution
style (engine/runners.py); the handlers and outcome records (engine/execution.py); the
outcome writer and the tasks held (engine/outcomes.py); the lease keeper
(engine/leases.py); the outage tracker (engine/outages.py).
"""
from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any, Callable

from . import clock
from .errors import ValidationError
from .claims import ClaimLoop
from .execution import CLAIM_FIELDS, Abort, Handler, Handlers
from .leases import LeaseKeeper, host_details
from .models import RunningTask, TaskType
from .outages import REDIS_DOWN, Outage
from .outcomes import OutcomeWriter
from .progress import ProgressPump
from .queue import TaskQueue, get_task_queue
from .async_runner import AsyncRunner
from .cancels import CancelListener
from .runners import InlineRunner, ThreadRunner
from .validation import check_id, check_text

__all__ = ["CLAIM_FIELDS", "REDIS_DOWN", "Handler", "TaskWorker", "new_worker_id"]


def new_worker_id() -> str:
    """``worker-`` + 8 hex digits, as the guide's banner shows."""
    return "worker-" + uuid.uuid4().hex[:8]


class TaskWorker:
    """A worker process's engine: ``register_handler`` then ``start``.

    ``concurrency`` is the number of handler slots. With 1, handlers run in the calling
    thread and quick tasks are claimed and reported in batches; with more, each slot is a
    thread (for I/O-bound handlers such as LLM calls) and outcomes are reported by a
    writer thread that batches whatever has finished. Once any handler is ``async def``,
    the worker runs an event loop instead (engine/async_runner.py): the ``concurrency``
    slots are shared by both kinds, a coroutine handler on the loop, a plain one in a
    thread of its own while it runs.
    """

    on_ready: Callable[[], None] | None = None   # called once registered (the CLI prints "ready")

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
        self.handlers = Handlers(self.worker_id, self.queue.settings.max_result_bytes,
                                 self.queue.sealer)
        for task_type, fn in (handlers or {}).items():
            self.register_handler(task_type, fn)
        self.outage = Outage(self.worker_id)
        self.writer = OutcomeWriter(self.worker_id, self.store, self.outage)
        self.stats = self.writer.stats
        self.progress = ProgressPump(self.store, self.outage, self.worker_id)
        self.writer.before_write = self.progress.flush_tasks
        self.leases = LeaseKeeper(self.queue, self.worker_id, self.heartbeat_interval,
                                  self.writer, self.outage, self._details, self.cancel_running)
        self._stopping = threading.Event()
        self.stopping_event = self._stopping     # the parts wait on it (engine/claims.py)
        self._aborting = False
        self.runner: InlineRunner | ThreadRunner | AsyncRunner = self._new_runner()
        self.claims = ClaimLoop(self)
        self.cancels = CancelListener(self.queue.client, self.queue.keys.cancels, self.cancel_running)
        self._started_ms = clock.now_ms()
        self._state = "starting"

    def claim(self, count: int) -> list[RunningTask]:
        """Claim up to ``count`` tasks now; they are held until their outcome is written."""
        return self.claims.claim(count)

    def _new_runner(self) -> InlineRunner | ThreadRunner | AsyncRunner:
        """The execution style the handlers registered so far call for."""
        if self.handlers.has_coroutines:
            return AsyncRunner(self.concurrency, self.handlers, self.writer, self.worker_id,
                               lambda: self._aborting)
        if self.concurrency == 1:
            return InlineRunner(self.handlers, self.writer, self._stopping)
        return ThreadRunner(self.concurrency, self.handlers, self.writer, self.worker_id,
                            lambda: self._aborting)

    # -- handlers -----------------------------------------------------------------------
    def register_handler(self, task_type: TaskType | str, fn: Handler,
                         timeout: float | None = None, limit: str | None = None) -> None:
        """Run ``fn(task)`` for tasks of ``task_type``: a plain function or an ``async def``
        one; its return value (JSON-serialisable) becomes the task's result.
        ``task.context`` lets it talk to this worker. ``timeout`` (seconds) is the
        default for tasks of the type that name none: past it the task ends with reason
        ``timeout`` and is retried or failed per its retry policy. ``limit`` names the
        provider limit key the handler's calls run under (engine/limits.py): tasks of the
        type then start only as fast as the key allows, fleet-wide."""
        self.handlers.register(task_type, fn, timeout, limit)

    def handler(self, task_type: TaskType | str, timeout: float | None = None,
                limit: str | None = None) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register_handler`."""
        def decorate(fn: Handler) -> Handler:
            self.register_handler(task_type, fn, timeout, limit)
            return fn
        return decorate

    @property
    def handler_types(self) -> list[str]:
        """Task types this worker can run."""
        return self.handlers.types

    @property
    def in_flight(self) -> int:
        """How many claimed tasks this worker holds (running, or waiting for a slot or for
        their outcome to be written)."""
        return len(self.writer.held)     # a dict's len: safe to read from any thread

    @property
    def observer(self) -> Any:
        """engine.observability.WorkerMetrics when metrics are served: told of claims and
        outcomes (None: nothing is counted per task)."""
        return self.writer.observer

    @observer.setter
    def observer(self, value: Any) -> None:
        self.writer.observer = value

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for (the worker may still be finishing tasks)."""
        return self._stopping.is_set()

    # -- life cycle ---------------------------------------------------------------------
    def start(self, burst: bool = False) -> dict[str, int]:
        """Run until :meth:`stop` (or a signal), or with ``burst`` until nothing is due.
        Returns the worker's counters."""
        self._stopping.clear()
        self._aborting = False
        self._state = "running"
        self.runner = self._new_runner()      # handlers registered since __init__ count
        self._register()
        if self._stopping.is_set():
            return dict(self.stats)
        if self.on_ready is not None:
            self.on_ready()
        self.leases.start()
        self.runner.start()
        self.progress.start()
        self.cancels.start()
        try:
            self.claims.run(burst)
        except Abort:
            pass
        finally:
            self._shut_down()
        return dict(self.stats)

    def _register(self) -> None:
        """First heartbeat (announces the worker); waits out a Redis outage with backoff."""
        while not self._stopping.is_set():
            try:
                self.leases.beat()
                self.outage.over()
                return
            except REDIS_DOWN as exc:
                self.outage.noticed(exc)
                self.outage.back_off(self._stopping)

    def cancel_running(self, task_id: str) -> bool:
        """``task_id`` is no longer this worker's: cancelled (engine/cancels.py hears of it
        at once), or found by the heartbeat to be requeued or handed to another worker.
        Stop its handler if this worker holds it. Returns whether it did."""
        task = self.writer.find(task_id)
        if task is None:
            return False
        self.runner.cancel(task)
        return True

    def beat(self) -> None:
        """One heartbeat now (the heartbeat thread beats on its own once started)."""
        self.leases.beat()

    def stop(self) -> None:
        """Stop claiming; finish the tasks in hand, hand back the ones not started, leave."""
        self._stopping.set()
        self._state = "stopping"
        self.runner.wake()

    def abort(self) -> None:
        """Stop now: hand every unfinished task back to the queue and leave."""
        self._aborting = True
        self.stop()
        if self.handlers.running_inline and threading.current_thread() is threading.main_thread():
            raise Abort()

    def process_one(self) -> bool:
        """Claim and run at most one task, and report it (for tests and step-by-step use).
        Returns whether a task was run."""
        self.claims.promote_if_due(force=True)
        batch = self.claims.hold(self.store.claim(self.worker_id, 1, self.handler_types,
                                                  self.handlers.limits), self.writer.record)
        for task in batch:
            if task.task_type in self.handlers.coroutine_types:
                self.writer.record(asyncio.run(self.handlers.run_coroutine(task)))
            else:
                self.writer.record(self.handlers.run(task))
        self.writer.flush()
        return bool(batch)

    def _details(self) -> dict[str, Any]:
        """This worker's registry entry, as each heartbeat writes it."""
        return {"name": self.name, **host_details(), "state": self._state,
                "concurrency": self.concurrency, **self.stats, "started_at": self._started_ms,
                "handlers": ",".join(self.handler_types),
                "types": json.dumps(self.handler_types)}   # for routing (claim.lua)

    # -- shutting down ------------------------------------------------------------------
    def _shut_down(self) -> None:
        self._stopping.set()
        self._state = "stopping"
        self.cancels.stop()
        self.runner.drain(self._aborting)
        if not self._aborting:
            self.writer.flush_retrying(10.0, give_up=lambda: self._aborting)
        else:
            self.writer.flush()
        self.progress.stop()
        self.writer.release(self.writer.unreported())
        self.leases.leave({**self.stats, "in_hand": 0})
        self._state = "stopped"

