"""The claim loop of a worker: claim what is due, hand it to the runner, wait for more.

A claim takes as many tasks as the runner has free slots (with one slot, as many quick
tasks as fit in a short window of measured run time); while nothing is pending the loop
waits on the wake-up marker with the next claim pipelined behind the wait, and promotes
due scheduled tasks and recurring schedules on the way. While tasks of its types wait for
a provider limit key (engine/limits.py), it sleeps until the first key frees.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from . import clock
from .crypto import open_claimed_payload
from .errors import CorruptRecord
from .execution import CLAIM_FIELDS, running_task
from .models import RunningTask
from .outages import REDIS_DOWN
from .runners import BLOCK_SLICE_SECONDS
from .scheduler import fire_due_schedules

if TYPE_CHECKING:   # for annotations only: the worker owns its claim loop
    from .worker import TaskWorker

BATCH_WINDOW_SECONDS = 0.05     # how much work a prefetched batch may hold, in run time
SHORT_WAIT_SECONDS = 0.25       # a limit key freeing sooner is waited for locally (see run)


class ClaimLoop:
    """The claim loop of ``worker``, working with its runner, writer and outage tracker."""

    def __init__(self, worker: "TaskWorker"):
        self.worker = worker
        self.queue, self.store, self.worker_id = worker.queue, worker.store, worker.worker_id
        self.handlers, self.writer, self.outage = worker.handlers, worker.writer, worker.outage
        self.concurrency, self.max_batch = worker.concurrency, worker.max_batch
        self.stopping = worker.stopping_event
        self._next_promote = 0.0
        self._next_limit = 0.0          # when a limit key this worker waits on frees (0: none)
        self._claimed = 0               # tasks the last claim returned

    @property
    def runner(self):
        """The worker's runner (made after this loop)."""
        return self.worker.runner

    def run(self, burst: bool) -> None:
        """Claim and dispatch until the worker stops (or, with ``burst``, nothing is due)."""
        drained = False    # the last claim got fewer tasks than asked: the queues were empty
        while not self.stopping.is_set():
            try:
                if self.runner.stuck():
                    self.outage.back_off(self.stopping)
                    continue
                free = self.runner.free_slots()
                if free == 0 or self.stopping.is_set():   # a stop while it waited for a slot
                    continue
                if not drained:
                    want = self.batch_size(free)
                    batch = self.claim(want)
                    drained = self._claimed < want
                    if batch:
                        self.runner.dispatch(batch)
                        self.promote_if_due(force=False)
                        continue
                # Nothing to claim: due scheduled tasks may be waiting to be promoted.
                if self.promote_if_due(force=burst):
                    drained = False
                elif burst:
                    if self.writer.idle() and not self._next_limit:
                        return
                    self.runner.wait(0.05)
                    if self._next_limit and clock.monotonic() >= self._next_limit:
                        drained = False         # a limit key has freed: claim again
                elif self.limit_frees_soon():
                    # Redis rounds a blocking wait up to its own tick (100 ms at hz 10):
                    # a limit key that frees sooner is waited for here, to the millisecond.
                    self.stopping.wait(max(0.0, self._next_limit - clock.monotonic()))
                    drained = False
                else:
                    want = self.batch_size(free)
                    batch = self.wait_for_work(want)
                    drained = self._claimed < want
                    if batch:
                        self.runner.dispatch(batch)
                self.outage.over()
            except REDIS_DOWN as exc:
                self.outage.noticed(exc)
                self.outage.back_off(self.stopping)
                drained = False

    def limit_frees_soon(self) -> bool:
        """Whether a limit key this worker waits on frees within SHORT_WAIT_SECONDS."""
        return bool(self._next_limit) and self._next_limit - clock.monotonic() < SHORT_WAIT_SECONDS

    def batch_size(self, free: int) -> int:
        average = self.handlers.average_run
        if self.concurrency > 1 or average <= 0:
            return free
        # Claim as many quick tasks as fit in a short window of run time: prefetching is
        # free throughput for no-op tasks and never hoards slow ones.
        return max(1, min(self.max_batch, int(BATCH_WINDOW_SECONDS / max(average, 1e-6))))

    def claim(self, count: int) -> list[RunningTask]:
        """Claim up to ``count`` tasks now; they are held until their outcome is written."""
        flat = self.store.claim(self.worker_id, count, self.handlers.types, self.handlers.limits)
        self.outage.over()
        return self.hold(flat, self.runner.report)

    def wait_for_work(self, want: int) -> list[RunningTask]:
        # Any submit (or a claim that left work behind) sets the marker. The claim rides in
        # the same round trip as the wait: Redis runs it the moment the marker wakes us.
        timeout = BLOCK_SLICE_SECONDS
        for at in (self._next_promote, self._next_limit):
            if at:
                timeout = min(timeout, max(0.001, at - clock.monotonic()))
        woke, flat = self.store.wait_and_claim(self.worker_id, want, timeout, self.handlers.types,
                                               self.handlers.limits)
        self.outage.over()
        if woke:
            # A submit of a task due later also wakes us: learn its due time soon, but
            # after the claim, so a pending task's latency never waits on a promote.
            self._next_promote = min(self._next_promote, clock.monotonic() + 0.05)
        return self.hold(flat, self.runner.report)

    def hold(self, flat: list, report: Callable) -> list[RunningTask]:
        """claim.lua's reply as tasks, now held by this worker. A task whose record the
        worker cannot use (engine/execution.py: running_task) is dead-lettered through
        ``report``, never handed to a handler, and never allowed to stop the worker."""
        tasks, corrupt = [], []
        self._next_limit = 0.0
        if len(flat) % CLAIM_FIELDS:      # ms until a limit key this worker waits on frees
            self._next_limit = clock.monotonic() + int(flat.pop()) / 1000
        self._claimed = len(flat) // CLAIM_FIELDS     # a short claim means the lists are empty
        sealer = self.queue.sealer                    # None unless payloads are encrypted
        limit_keys = self.handlers.limit_keys
        for i in range(0, len(flat), CLAIM_FIELDS):
            values = flat[i:i + CLAIM_FIELDS]
            try:
                if sealer is not None:
                    values[4] = open_claimed_payload(sealer, values[4])
                task = running_task(values, self.worker)
                if limit_keys:
                    task.limit_key = limit_keys.get(task.task_type)
                tasks.append(task)
            except CorruptRecord as exc:
                corrupt.append(self.handlers.corrupt(values, str(exc)))
        self.writer.hold(tasks + [outcome.task for outcome in corrupt])
        observer = self.writer.observer
        if observer is not None:
            observer.claimed(tasks)
        for outcome in corrupt:
            report(outcome)
        return tasks

    def promote_if_due(self, force: bool) -> int:
        now = clock.monotonic()
        if not force and now < self._next_promote:
            return 0
        moved, next_due_ms = self.store.promote()
        moved += len(fire_due_schedules(self.queue))   # recurring schedules (engine.scheduler)
        wait = 1.0 if next_due_ms < 0 else min(1.0, next_due_ms / 1000)
        self._next_promote = now + wait
        return moved

