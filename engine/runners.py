"""How a worker runs the handlers of the tasks it claimed: one execution style each.

``InlineRunner`` (concurrency 1) runs handlers in the worker's own thread and writes a
batch's outcomes in one call per kind after it. ``ThreadRunner`` (concurrency N) runs them
in N slot threads, and a writer thread writes whatever has finished, batched. Both draw
from the same claim loop (engine/worker.py) and report through the same OutcomeWriter;
an async runner takes the same shape.
"""
from __future__ import annotations

import queue as queue_module
import threading
from typing import Callable

from .execution import Handlers, Outcome
from .models import RunningTask
from .outcomes import OutcomeWriter

BLOCK_SLICE_SECONDS = 1.0       # longest wait for a free slot before the loop looks again


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
            self.writer.record(self.handlers.run(task, inline=True))
        self.writer.flush()

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

    def start(self) -> None:
        """Start the slot threads and the writer thread."""
        self.threads = [threading.Thread(target=self._slot_loop, name=f"{self.name}-slot{i}",
                                         daemon=True) for i in range(self.concurrency)]
        self.threads.append(threading.Thread(target=self._writer_loop, name=f"{self.name}-writer",
                                             daemon=True))
        for thread in self.threads:
            thread.start()

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

    def _slot_loop(self) -> None:
        while True:
            task = self.work.get()
            if task is None:
                return
            outcome = None if self.aborting() else self.handlers.run(task)
            with self.slots:
                self.free += 1
                self.slots.notify_all()
            if outcome is not None:
                self.outcomes.put(outcome)

    def _writer_loop(self) -> None:
        while True:
            outcome = self.outcomes.get()
            if outcome is None:
                self.writer.flush_retrying(give_up=self.aborting)
                return
            self.writer.record(outcome)
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
        for _ in range(self.concurrency):
            self.work.put(None)
        self.outcomes.put(None)
        writer = self.threads[-1] if self.threads else None
        if writer is not None and not aborting:
            writer.join(timeout=30)
