"""Progress and streamed text of running tasks: buffered in the worker, written to Redis
at most every FLUSH_SECONDS per task, and once more just before the task's outcome.

A handler calls ``task.report_progress(fraction, message)`` and ``task.stream(text)``
(engine/models.py). Both only buffer here and never wait on Redis, so they cost the same
from a slot thread and from an ``async def`` handler on the event loop. The worker's
``ProgressPump`` thread writes every task that is due in one progress.lua call: a handler
streaming tokens as fast as it likes causes at most 1 / FLUSH_SECONDS writes a second
(10), and a worker running a thousand such handlers makes one script call per
FLUSH_SECONDS. The outcome writer (engine/outcomes.py) calls :meth:`ProgressPump.flush_tasks`
before it writes outcomes, so the stored text is complete when the task ends.

Writes are fenced like every report of a worker: progress.lua refuses a token that is no
longer the task's (lease lost, cancelled, requeued), and the pump then drops the task's
buffer and ignores what its handler streams after.
"""
from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from . import clock
from .models import RunningTask
from .outages import REDIS_DOWN, Outage
from .store import Store

log = logging.getLogger("engine.worker")

FLUSH_SECONDS = 0.1             # shortest gap between two writes of one task (≤ 10 a second)
MAX_PARTIAL_BYTES = 64 * 1024   # streamed text kept per task; more is dropped (the result has it all)
EVENT_TEXT_BYTES = 2048         # a task.progress event carries the new text up to this size
IDLE_SECONDS = 1.0              # how long the pump sleeps when nothing waits to be written
MAX_TASKS_PER_CALL = 500        # tasks written by one script call (keeps each call short)
CLOCK_SLACK = 1e-6              # seconds: a float sum of 0.05 + 0.05 may fall short of 0.1
CLOSED_KEPT = 10_000            # ended or lost attempts remembered, to ignore late streams


@dataclass(slots=True, eq=False)
class _Buffer:
    """What one running task has reported since its last write."""

    task: RunningTask
    fraction: str = ""          # '' = no progress reported since the last write
    message: str = ""
    chunks: list[str] = field(default_factory=list)
    buffered: int = 0           # bytes in chunks
    sent: int = 0               # bytes of text written (or being written)
    last_write: float = -math.inf
    full: bool = False          # text reached MAX_PARTIAL_BYTES: the rest is dropped

    @property
    def dirty(self) -> bool:
        return bool(self.fraction or self.chunks)


@dataclass(slots=True)
class _Write:
    """One task's part of a script call, kept until Redis has taken it."""

    buffer: _Buffer
    fraction: str
    message: str
    text: str
    offset: int                 # bytes of the task's text written before this text
    size: int                   # bytes of this text

    def item(self) -> tuple[str, str, str, str, str, int]:
        task = self.buffer.task
        return task.task_id, task.token, self.fraction, self.message, self.text, self.offset


class ProgressPump:
    """The progress and streamed text of the tasks one worker runs.

    ``monotonic`` is the clock the throttle reads (tests pass their own and call
    :meth:`flush_due` instead of starting the thread). ``calls`` counts script calls.
    """

    def __init__(self, store: Store, outage: Outage, name: str = "worker",
                 monotonic: Callable[[], float] = clock.monotonic):
        self.store, self.outage, self.name, self.monotonic = store, outage, name, monotonic
        self.calls = 0
        self._buffers: dict[str, _Buffer] = {}
        # (id, token) of attempts that ended or were lost: what their handlers stream late
        # (an abandoned thread) is ignored, not written and refused ten times a second.
        self._closed: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()           # the buffers
        self._write_lock = threading.Lock()     # one script call at a time, in order
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what handlers call (through task.context) ---------------------------------------
    def report(self, task: RunningTask, fraction: float, message: str | None) -> None:
        """Buffer a progress report (checked by the caller); the newest one wins."""
        with self._lock:
            buffer = self._buffer(task)
            if buffer is not None:
                buffer.fraction, buffer.message = repr(float(fraction)), message or ""
                self._wake.set()

    def stream(self, task: RunningTask, text: str) -> None:
        """Buffer ``text`` to append to the task's answer so far (past MAX_PARTIAL_BYTES
        it is dropped, cut at a character)."""
        raw = text.encode("utf-8", "backslashreplace")     # a lone surrogate as an escape
        with self._lock:
            buffer = self._buffer(task)
            if buffer is None or buffer.full:
                return
            room = MAX_PARTIAL_BYTES - buffer.sent - buffer.buffered
            if len(raw) > room:
                buffer.full = True
                text = raw[:room].decode("utf-8", "ignore")
                raw = text.encode()
            elif not text.isascii():
                text = raw.decode()
            if raw:
                buffer.chunks.append(text)
                buffer.buffered += len(raw)
                self._wake.set()

    def _buffer(self, task: RunningTask) -> _Buffer | None:
        """The task's buffer (made on first use); None once the task ended or was lost."""
        buffer = self._buffers.get(task.task_id)
        if buffer is not None and buffer.task is task:
            return buffer
        if task.cancelled or not task.token or (task.task_id, task.token) in self._closed:
            return None
        buffer = self._buffers[task.task_id] = _Buffer(task)
        return buffer

    # -- writing -----------------------------------------------------------------------
    def flush_due(self) -> float | None:
        """Write every task whose last write is FLUSH_SECONDS old and that has something
        new. Returns the seconds until the next buffered task is due (None: none waits)."""
        with self._write_lock:      # taken before the buffers: writes go out in take order
            now = self.monotonic()
            with self._lock:
                for buffer in [b for b in self._buffers.values() if b.task.cancelled]:
                    self._close(buffer)             # cancelled: Redis would refuse it
                writes, waiting = [], []
                for buffer in self._buffers.values():
                    if not buffer.dirty:
                        continue
                    if now - buffer.last_write >= FLUSH_SECONDS - CLOCK_SLACK:
                        writes.append(self._take(buffer, now))
                    else:
                        waiting.append(buffer.last_write + FLUSH_SECONDS - now)
            self._write(writes)
        return max(0.0, min(waiting)) if waiting else None

    def flush_tasks(self, outcomes: Iterable[Any]) -> None:
        """Write what the tasks of ``outcomes`` (about to be written) have buffered, now,
        and forget them. Raises a REDIS_DOWN error with everything kept for the next try;
        any other failure is logged and the text dropped: a display must never keep a
        result from being written."""
        if not self._buffers:
            return
        with self._write_lock:
            with self._lock:
                tasks = [o.task for o in outcomes]
                buffers = [b for b, t in ((self._buffers.get(t.task_id), t) for t in tasks)
                           if b is not None and b.task is t]
                writes = [self._take(b, self.monotonic()) for b in buffers if b.dirty]
            try:
                self._write(writes)
            except REDIS_DOWN:
                raise
            except Exception:
                log.exception("%s: the last progress of %d tasks could not be written",
                              self.name, len(writes))
        with self._lock:
            for buffer in buffers:
                self._close(buffer)

    def _take(self, buffer: _Buffer, now: float) -> _Write:
        """Move what ``buffer`` holds into a write (called with the lock held)."""
        write = _Write(buffer, buffer.fraction, buffer.message, "".join(buffer.chunks),
                       buffer.sent, buffer.buffered)
        buffer.sent += buffer.buffered
        buffer.fraction, buffer.message, buffer.chunks, buffer.buffered = "", "", [], 0
        buffer.last_write = now
        return write

    def _write(self, writes: list[_Write]) -> None:
        """Run progress.lua for ``writes`` (called with the write lock held); on an outage
        give them back to their buffers."""
        for start in range(0, len(writes), MAX_TASKS_PER_CALL):
            part = writes[start:start + MAX_TASKS_PER_CALL]
            try:
                codes = self.store.progress([w.item() for w in part], EVENT_TEXT_BYTES)
            except REDIS_DOWN:
                self._give_back(writes[start:])
                raise
            self.calls += 1
            self._lost([w for w, code in zip(part, codes) if int(code) != 1])

    def _give_back(self, writes: list[_Write]) -> None:
        with self._lock:
            for write in writes:
                buffer = write.buffer
                buffer.chunks.insert(0, write.text)
                buffer.buffered += write.size
                buffer.sent -= write.size
                if not buffer.fraction:
                    buffer.fraction, buffer.message = write.fraction, write.message

    def _lost(self, writes: list[_Write]) -> None:
        """Tasks Redis refused (no longer this worker's): nothing more is written for them."""
        with self._lock:
            for write in writes:
                self._close(write.buffer)

    def _close(self, buffer: _Buffer) -> None:
        task = buffer.task
        if self._buffers.get(task.task_id) is buffer:
            del self._buffers[task.task_id]
        self._closed[(task.task_id, task.token)] = None
        if len(self._closed) > CLOSED_KEPT:
            self._closed.popitem(last=False)

    # -- the thread --------------------------------------------------------------------
    def start(self) -> None:
        """Write buffered progress in a daemon thread until :meth:`stop`."""
        self._stopped.clear()
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-progress",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (the outcome writer has written the last of each task's text)."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self._wake.clear()
            try:
                wait = self.flush_due()
            except REDIS_DOWN as exc:   # kept: written when Redis is back
                self.outage.noticed(exc)
                wait = IDLE_SECONDS
            except Exception:  # never let the pump die: progress is a display
                log.exception("%s: progress write failed", self.name)
                wait = IDLE_SECONDS
            self._wake.wait(IDLE_SECONDS if wait is None else wait)
