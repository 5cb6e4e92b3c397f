"""``AsyncRunner``: a worker's handlers on one asyncio event loop, in a thread of its own.

A worker runs it as soon as one of its handlers is ``async def``. The worker's
``concurrency`` slots are one pool shared by both kinds of handler, first come first
served: a task takes a slot whichever kind runs it. A coroutine handler runs on the loop
(a thousand of them cost a thousand small coroutines, not a thousand threads); a plain
handler gets a thread of its own for the time it runs (made when it starts, so a worker
whose tasks are all ``async def`` has no slot threads at all). Outcomes go through the
same writer thread and OutcomeWriter as the thread runner's (engine/runners.py).

Timeouts and cancels: a coroutine handler is cancelled (``CancelledError`` is raised at
its ``await``); a plain handler is abandoned as in the thread runner: its slot is freed
at once, and what it returns later is handled as there.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Callable

from .execution import Handlers, Outcome
from .models import RunningTask
from .outcomes import OutcomeWriter
from .runners import BLOCK_SLICE_SECONDS, ThreadRunner

# With hundreds of slots, slots free up one by one: claiming and writing each alone would
# cost two script calls a task. The claim waits up to GATHER_SECONDS for a fiftieth of the
# slots to be free, and the writer as long for more outcomes (a few ms on calls of seconds).
GATHER_SECONDS = 0.005
ABORT_WAIT_SECONDS = 5.0        # an abort waits this long for cancelled handlers to unwind


class AsyncRunner(ThreadRunner):
    """Up to ``concurrency`` handlers at once on one event loop (plain ones in threads)."""

    def __init__(self, concurrency: int, handlers: Handlers, writer: OutcomeWriter,
                 name: str, aborting: Callable[[], bool]):
        super().__init__(concurrency, handlers, writer, name, aborting)
        self.loop = asyncio.new_event_loop()
        self.futures: dict[str, asyncio.Task] = {}      # only touched on the loop's thread
        self.gather = max(1, concurrency // 50)
        self.gather_seconds = GATHER_SECONDS if concurrency > 1 else 0.0

    def start(self) -> None:
        """Start the event loop's thread and the writer thread."""
        self.done.clear()
        if self.loop.is_closed():       # a worker started again after a stop
            self.loop = asyncio.new_event_loop()
        self.threads = [self._thread(self.loop.run_forever, "loop"),
                        self._thread(self._writer_loop, "writer")]

    def free_slots(self) -> int:
        """Slots free now: waiting up to BLOCK_SLICE_SECONDS for one, then up to
        GATHER_SECONDS for a few more, so that one claim takes them all."""
        with self.slots:
            if self.free == 0:
                self.slots.wait(timeout=BLOCK_SLICE_SECONDS)
            if 0 < self.free < self.gather:
                self.slots.wait_for(lambda: self.free >= self.gather, timeout=GATHER_SECONDS)
            return self.free

    def dispatch(self, batch: list[RunningTask]) -> None:
        """Start the batch's handlers on the loop (the claim took no more than were free)."""
        with self.slots:
            self.free -= len(batch)
        self.loop.call_soon_threadsafe(self._start_all, batch)

    def _start_all(self, batch: list[RunningTask]) -> None:
        for task in batch:
            self.futures[task.task_id] = self.loop.create_task(self._run(task))

    async def _run(self, task: RunningTask) -> None:
        seconds = self.handlers.timeout_for(task)
        outcome: Outcome | None = None
        try:
            if task.cancelled or self.aborting():
                return
            async with asyncio.timeout(seconds):
                if task.task_type in self.handlers.coroutine_types:
                    outcome = await self.handlers.run_coroutine(task)
                else:
                    outcome = await self._in_thread(task)
        except TimeoutError:
            outcome = self.handlers.timed_out(task, seconds)
        except asyncio.CancelledError:      # cancelled (cancel_task) or the worker aborts
            outcome = None
        finally:
            if self.futures.get(task.task_id) is asyncio.current_task():
                del self.futures[task.task_id]
            with self.slots:
                self.free += 1
                self.slots.notify_all()
        if outcome is not None and not task.cancelled and not self.aborting():
            self.outcomes.put(outcome)

    def _in_thread(self, task: RunningTask) -> asyncio.Future:
        """Run a plain handler in a thread of its own; the future ends with its outcome (a
        cancelled future: the thread runs on, abandoned, and its outcome is dropped)."""
        future = self.loop.create_future()

        def finish(outcome: Outcome) -> None:
            if not future.done():
                future.set_result(outcome)
            else:
                self._late(outcome)

        def run() -> None:
            outcome = self.handlers.run(task)
            if not self.loop.is_closed():
                self.loop.call_soon_threadsafe(finish, outcome)
        threading.Thread(target=run, name=f"{self.name}-task", daemon=True).start()
        return future

    def cancel(self, task: RunningTask) -> None:
        """``task`` was cancelled: its coroutine is cancelled (a plain handler's thread is
        abandoned, and sees ``task.context.cancelled``); its slot is freed."""
        task.cancelled = True
        self.writer.forget(task)
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._cancel_on_loop, task.task_id)

    def _cancel_on_loop(self, task_id: str) -> None:
        future = self.futures.get(task_id)
        if future is not None:
            future.cancel()

    def drain(self, aborting: bool) -> None:
        """At shutdown: running handlers finish (graceful) or are cancelled and their
        tasks handed back by the release that follows (abort); then the loop stops."""
        with self.slots:
            while not aborting and self.free < self.concurrency:
                self.slots.wait(timeout=0.5)
        if aborting and self.loop.is_running():
            waiting = asyncio.run_coroutine_threadsafe(self._cancel_all(), self.loop)
            try:
                waiting.result(timeout=ABORT_WAIT_SECONDS)
            except (TimeoutError, asyncio.CancelledError):  # a handler that ignores its cancel
                pass
        self.done.set()
        self.outcomes.put(None)
        if not aborting:
            self.threads[1].join(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.threads[0].join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()

    async def _cancel_all(self) -> None:
        """Cancel every running handler and let each see its CancelledError."""
        futures = list(self.futures.values())
        for future in futures:
            future.cancel()
        await asyncio.gather(*futures, return_exceptions=True)
