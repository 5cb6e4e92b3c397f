"""How a worker runs the handlers of the tasks it claimed: one execution style each.

``InlineRunner`` (concurrency 1) runs handlers in the worker's own thread and writes a
batch's outcomes in one call per kind after it. ``ThreadRunner`` (concurrency N) runs them
in N slot threads, and a writer thread writes whatever has finished, batched. Both draw
from the same claim loop (engine/worker.py) and report through the same OutcomeWriter;
``AsyncRunner`` (engine/async_runner.py) takes the same shape for ``async def`` handlers.

Timeouts and cancels: a thread cannot be stopped from outside, so a plain handler past its
timeout (or whose task was cancelled) is abandoned: its slot is freed at once and a fresh
slot thread takes its place. What a timed-out handler returns later is dropped; what a
cancelled one returns goes to Redis, which refuses it by its fencing token (complete.lua,
fail.lua). The inline runner pays
for none of this unless a task has a timeout: only such a task runs in a helper thread.
"""
from __future__ import annotations

import queue as queue_module
import threading
import time
from typing import Callable

from .execution import Handlers, Outcome
from .models import RunningTask
from .outcomes import OutcomeWriter

BLOCK_SLICE_SECONDS = 1.0       # longest wait for a free slot before the loop looks again
WATCH_SECONDS = 0.05            # how often the thread runner looks for tasks past their timeout


class InlineRunner:
    """Handlers in the calling thread, one task after another."""

    def __init__(self, handlers: Handlers, writer: OutcomeWriter, stopping: threading.Event):
        self.handlers, self.writer, self.stopping = handlers, writer, stopping

    def start(self) -> None:
        """Nothing to start: the claim loop's thread runs the handlers."""

    def free_slots(self) -> int:
        """One: the loop claims again only after running what it claimed."""
        return 1

    def dispatch(self, batch: list[RunningTask]) -> None:
        """Run the batch, then write its outcomes; a stop hands the rest back."""
        for index, task in enumerate(batch):
            if self.stopping.is_set():
                self.writer.release(batch[index:])
                break
            if task.timeout is None and not self.handlers.timeouts:
                self.writer.record(self.handlers.run(task, inline=True))
            else:
                self._run_bounded(task)
        self.writer.flush()

    def _run_bounded(self, task: RunningTask) -> None:
        """Run a task that may have a timeout in a helper thread, and abandon it past its
        timeout (its late outcome is dropped)."""
        seconds = self.handlers.timeout_for(task)
        if seconds is None:
            self.writer.record(self.handlers.run(task, inline=True))
            return
        first = threading.Lock()        # the handler's outcome or the timeout's: one only

        def run() -> None:
            outcome = self.handlers.run(task)
            if first.acquire(blocking=False):
                self.writer.record(outcome)
        helper = threading.Thread(target=run, name=f"task-{task.task_id}", daemon=True)
        helper.start()
        helper.join(seconds)
        if helper.is_alive() and first.acquire(blocking=False):
            self.writer.record(self.handlers.timed_out(task, seconds))

    def cancel(self, task: RunningTask) -> None:
        """A running inline handler cannot be taken off the worker's own thread: it sees
        ``task.context.cancelled`` and should stop; its outcome is refused."""
        task.cancelled = True
        self.writer.forget(task)

    def report(self, outcome: Outcome) -> None:
        """An outcome reached without a handler (a corrupt record): written with the rest."""
        self.writer.record(outcome)

    def stuck(self) -> bool:
        """Whether outcomes wait that Redis will not take (trying once more now)."""
        return bool(self.writer.unwritten) and not self.writer.flush()

    def wait(self, seconds: float) -> None:
        """Nothing runs in the background: nothing to wait for."""

    def wake(self) -> None:
        """Nothing waits."""

    def drain(self, aborting: bool) -> None:
        """Nothing runs in the background at shutdown."""


class ThreadRunner:
    """Handlers in ``concurrency`` slot threads; outcomes written by one writer thread."""

    def __init__(self, concurrency: int, handlers: Handlers, writer: OutcomeWriter,
                 name: str, aborting: Callable[[], bool]):
        self.concurrency = concurrency
        self.handlers, self.writer, self.name, self.aborting = handlers, writer, name, aborting
        self.free = concurrency
        self.slots = threading.Condition(writer.lock)
        self.work: queue_module.Queue = queue_module.Queue()
        self.outcomes: queue_module.Queue = queue_module.Queue()
        self.threads: list[threading.Thread] = []
        # Tasks a slot thread runs now: id -> (task, deadline on the monotonic clock or None).
        self.running: dict[str, tuple[RunningTask, float | None]] = {}
        self.done = threading.Event()
        self._spawned = 0
        self.gather_seconds = 0.0       # the writer waits this long for more outcomes to batch

    def start(self) -> None:
        """Start the slot threads, the writer thread and the timeout watch."""
        self.done.clear()
        self.threads = [self._thread(self._slot_loop, "slot") for _ in range(self.concurrency)]
        self.threads.append(self._thread(self._writer_loop, "writer"))
        self._thread(self._watch_loop, "watch")

    def _thread(self, target: Callable[[], None], role: str) -> threading.Thread:
        self._spawned += 1
        thread = threading.Thread(target=target, name=f"{self.name}-{role}{self._spawned}",
                                  daemon=True)
        thread.start()
        return thread

    def free_slots(self) -> int:
        """Slots free now (waiting up to BLOCK_SLICE_SECONDS for one when none is)."""
        with self.slots:
            if self.free == 0:
                self.slots.wait(timeout=BLOCK_SLICE_SECONDS)
            return self.free

    def dispatch(self, batch: list[RunningTask]) -> None:
        """Queue the batch to the slots (the claim took no more than were free)."""
        with self.slots:
            self.free -= len(batch)
        for task in batch:
            self.work.put(task)

    def report(self, outcome: Outcome) -> None:
        """An outcome reached without a handler (a corrupt record): to the writer."""
        self.outcomes.put(outcome)

    def stuck(self) -> bool:
        """Whether Redis refused the writer's last write: the writer retries; the claim
        loop waits rather than pile up more results it cannot write."""
        return self.writer.refused

    def wait(self, seconds: float) -> None:
        """Wait up to ``seconds`` for a slot to finish."""
        with self.slots:
            self.slots.wait(timeout=seconds)

    def wake(self) -> None:
        """Wake the claim loop if it waits for a slot (a stop)."""
        with self.slots:
            self.slots.notify_all()

    def cancel(self, task: RunningTask) -> None:
        """``task`` was cancelled: its handler sees ``task.context.cancelled``, and its slot
        is freed now (the handler's thread is abandoned if it runs on)."""
        task.cancelled = True
        with self.slots:
            self._abandon(task.task_id)     # a task still queued to the slots is skipped
        self.writer.forget(task)

    def _abandon(self, task_id: str) -> RunningTask | None:
        """Free the slot of a running task and start a slot thread in its place (called
        with the slots lock held). None when the task is not running (it finished)."""
        entry = self.running.pop(task_id, None)
        if entry is None:
            return None
        self.free += 1
        self.slots.notify_all()
        self.threads.append(self._thread(self._slot_loop, "slot"))
        return entry[0]

    def _slot_loop(self) -> None:
        while True:
            task = self.work.get()
            if task is None:
                return
            if task.cancelled or self.aborting():
                outcome = None
            else:
                seconds = self.handlers.timeout_for(task)
                with self.slots:
                    self.running[task.task_id] = (task, None if seconds is None
                                                  else time.monotonic() + seconds)
                outcome = self.handlers.run(task)
            with self.slots:
                if outcome is not None and self.running.get(task.task_id, (None,))[0] is not task:
                    self._late(outcome)
                    return      # abandoned (timeout or cancel): a new thread has the slot
                self.running.pop(task.task_id, None)
                self.free += 1
                self.slots.notify_all()
            if outcome is not None and not self.aborting():
                self.outcomes.put(outcome)

    def _late(self, outcome: Outcome) -> None:
        """The outcome of an abandoned handler. A cancelled task's goes to Redis, which
        refuses it by its fencing token (counted ``lost``); a timed-out task's is dropped,
        as it could reach Redis before its ``timeout`` outcome and end the task."""
        if outcome.task.cancelled:
            self.outcomes.put(outcome)

    def _watch_loop(self) -> None:
        """End the tasks past their timeout: a ``timeout`` outcome, the slot freed."""
        while not self.done.wait(WATCH_SECONDS):
            now = time.monotonic()
            with self.slots:
                late = [(task, deadline) for task, deadline in self.running.values()
                        if deadline is not None and deadline <= now]
                for task, _ in late:
                    self._abandon(task.task_id)
            for task, _ in late:
                self.outcomes.put(self.handlers.timed_out(task, self.handlers.timeout_for(task)))

    def _writer_loop(self) -> None:
        while True:
            outcome = self.outcomes.get()
            if outcome is None:
                self.writer.flush_retrying(give_up=self.aborting)
                return
            self.writer.record(outcome)
            if self.gather_seconds:
                time.sleep(self.gather_seconds)
            while True:                     # and whatever else has finished meanwhile
                try:
                    extra = self.outcomes.get_nowait()
                except queue_module.Empty:
                    break
                if extra is None:
                    self.outcomes.put(None)
                    break
                self.writer.record(extra)
            self.writer.flush_retrying(give_up=self.aborting)

    def drain(self, aborting: bool) -> None:
        """At shutdown: tasks queued to slots but not started go back; running ones finish
        (graceful) or are abandoned to the release that follows (abort)."""
        not_started = []
        while True:
            try:
                task = self.work.get_nowait()
            except queue_module.Empty:
                break
            if task is not None:
                not_started.append(task)
        self.writer.release(not_started)
        with self.slots:
            self.free += len(not_started)
            while not aborting and self.free < self.concurrency:
                self.slots.wait(timeout=0.5)
        self.done.set()
        for _ in range(self.concurrency):
            self.work.put(None)
        self.outcomes.put(None)
        writer = self.threads[self.concurrency] if len(self.threads) > self.concurrency else None
        if writer is not None and not aborting:
            writer.join(timeout=30)
