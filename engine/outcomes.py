"""What a worker holds and what it owes Redis: its claimed tasks, and their outcomes.

``OutcomeWriter`` keeps the tasks a worker claimed until their outcome is written, and
writes outcomes in one script call per kind (complete.lua, fail.lua, defer.lua) for a
whole batch. Calls made under a provider limit key are settled first (settle.lua): their
place in the key is freed and what the provider said of its limits is learnt.
On an outage outcomes stay buffered and are written late, never dropped; a task given
back (a stopping worker) goes through release.lua.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable

from . import clock
from .execution import Completed, Deferred, Failed, Outcome
from .limits import settle_item
from .models import RunningTask
from .pricing import usage_item
from .outages import MAX_BACKOFF_SECONDS, REDIS_DOWN, Outage
from .store import Store

log = logging.getLogger("engine.worker")


class OutcomeWriter:
    """The held tasks and unwritten outcomes of the worker ``worker_id``.

    ``stats`` counts what Redis recorded: processed, failed (for good), retried, and lost
    (the task was no longer this worker's: its lease ran out, or it was cancelled or
    requeued). ``observer`` (engine/observability.py) is told of every outcome.
    """

    def __init__(self, worker_id: str, store: Store, outage: Outage):
        self.worker_id = worker_id
        self.store = store
        self.outage = outage
        self.stats = {"processed": 0, "failed": 0, "retried": 0, "lost": 0, "deferred": 0}
        self.held: dict[str, RunningTask] = {}        # claimed and not yet reported
        self.unwritten: list[Outcome] = []            # outcomes Redis has not taken yet
        self.refused = False                          # the last write did not go through
        self.lock = threading.RLock()
        self.observer: Any = None
        self.prices = store.settings.price_table     # AGENT_PRICES, parsed once
        # Called with the outcomes about to be written (engine/progress.py writes the last of
        # their streamed text first, so a finished task's text is whole).
        self.before_write: Callable[[list[Outcome]], None] | None = None

    # -- holding -----------------------------------------------------------------------
    def hold(self, tasks: Iterable[RunningTask]) -> None:
        """The worker now holds ``tasks`` (claimed)."""
        with self.lock:
            for task in tasks:
                self.held[task.task_id] = task

    def idle(self) -> bool:
        """Whether nothing is held and nothing is waiting to be written."""
        with self.lock:
            return not self.held and not self.unwritten

    def tokens(self) -> list[tuple[str, str]]:
        """(id, fencing token) of every held task still believed this worker's."""
        with self.lock:
            return [(t.task_id, t.token) for t in self.held.values() if not t.cancelled]

    def mark_gone(self, task_ids: Iterable[str]) -> None:
        """These tasks are no longer this worker's (the heartbeat says): a cooperative
        handler sees ``task.cancelled`` (or ``task.context.cancelled``) and stops."""
        with self.lock:
            for task_id in task_ids:
                task = self.held.get(task_id)
                if task is not None:
                    task.cancelled = True

    def forget(self, task: RunningTask) -> None:
        """Stop holding ``task`` without an outcome (it was cancelled: Redis has ended it
        and released its lease). A later outcome of it is refused by its fencing token."""
        with self.lock:
            if self.held.get(task.task_id) is task:
                del self.held[task.task_id]

    def find(self, task_id: str) -> RunningTask | None:
        """The held task ``task_id`` (None when this worker does not hold it)."""
        return self.held.get(task_id)

    def unreported(self) -> list[RunningTask]:
        """Held tasks whose outcome is not even buffered: to hand back when leaving."""
        with self.lock:
            buffered = {id(o.task) for o in self.unwritten}
            return [t for t in self.held.values() if id(t) not in buffered]

    # -- writing -----------------------------------------------------------------------
    def record(self, outcome: Outcome) -> None:
        """Buffer an outcome for the next :meth:`flush`."""
        if self.observer is not None:
            self.observer.finished(outcome)
        with self.lock:
            self.unwritten.append(outcome)

    def flush(self) -> bool:
        """Write every buffered outcome (one script call per kind). On a Redis outage they
        stay buffered for the next try: a result is written late, never dropped."""
        with self.lock:
            outcomes, self.unwritten = self.unwritten, []
        if not outcomes:
            return True
        done = [o for o in outcomes if isinstance(o, Completed)]
        metered = [o for o in done if o.usage]
        failed = [o for o in outcomes if isinstance(o, Failed)]
        deferred = [o for o in outcomes if isinstance(o, Deferred)]
        settle = [o for o in outcomes if o.task.limit_key and not isinstance(o, Deferred)]
        try:
            if self.before_write is not None:
                self.before_write(outcomes)
            if settle:
                self._settle(settle)       # before the ends: a freed key wakes a worker
                settle = []
            if deferred:
                self._defer(deferred)
                deferred = []
            if metered:
                self._meter(metered)       # before the ends: a waiter then reads the task's tokens
            if done:
                codes = self.store.complete([(o.task.task_id, o.task.token, o.doc, o.duration_ms)
                                             for o in done])
                self._count(done, codes, {1: "processed"})
                done = []
            if failed:
                codes = self.store.fail([(o.task.task_id, o.task.token, o.error, o.traceback,
                                          o.retry_delay_ms, o.doc, o.reason) for o in failed])
                self._count(failed, codes, {1: "failed", 2: "retried"})
        except REDIS_DOWN as exc:
            with self.lock:
                self.unwritten[:0] = deferred + done + failed
            self.refused = True
            self.outage.noticed(exc)
            return False
        self.refused = False
        self.outage.over()
        if any(o.task.session_id and o.task.payload.get("conversation") is True
               for o in outcomes):
            self._pass_turn()
        return True

    def _pass_turn(self) -> None:
        """A conversation's task has ended: wake a worker, whose claim hands the session's
        turn to its next task (claim.lua), instead of leaving it to the next wake-up."""
        try:
            self.store.wake()
        except REDIS_DOWN as exc:        # the next claim passes the turn all the same
            self.outage.noticed(exc)

    def _settle(self, outcomes: list[Outcome]) -> None:
        self.store.settle([settle_item(o.task.task_id, o.task.limit_key, o.task.provider_signal,
                                       getattr(o, "usage", None)) for o in outcomes])
        for o in outcomes:      # settled once: a flush retried after an outage skips it
            o.task.limit_key = None

    def _meter(self, outcomes: list[Completed]) -> None:
        """Count the tokens and cost the results report (usage.lua). Not fenced: the calls
        were made, whoever holds the task now. Once per outcome, even when the flush is
        retried after an outage."""
        items = [usage_item(o.task.task_id, {"usage": o.usage, "model": o.model}, self.prices)
                 for o in outcomes]
        items = [item for item in items if item is not None]
        if items:
            self.store.usage(items)
        for o in outcomes:
            o.usage = None

    def _defer(self, outcomes: list[Deferred]) -> None:
        items = []
        for o in outcomes:
            signal = o.task.provider_signal
            items.append((o.task.task_id, o.task.token, o.limit_key, o.delay_ms,
                          o.limit_key == o.task.limit_key, bool(signal and signal.headers)))
        self._count(outcomes, self.store.defer(items), {1: "deferred", 2: "failed"})

    def flush_retrying(self, seconds: float | None = None,
                       give_up: Callable[[], bool] = lambda: False) -> None:
        """Flush, retrying with backoff while Redis is away, until everything is written,
        ``give_up()`` says so, or ``seconds`` have passed (None: no limit)."""
        deadline = None if seconds is None else clock.monotonic() + seconds
        delay = 0.1
        while not self.flush() and not give_up():
            left = None if deadline is None else deadline - clock.monotonic()
            if left is not None and left <= 0:
                return
            time.sleep(delay if left is None else min(delay, left))
            delay = min(MAX_BACKOFF_SECONDS, delay * 2)

    def _count(self, outcomes: list, codes: list[int], names: dict[int, str]) -> None:
        with self.lock:
            for outcome, code in zip(outcomes, codes):
                task = outcome.task
                if self.held.get(task.task_id) is task:   # not a later claim of the same id
                    del self.held[task.task_id]
                name = names.get(int(code), "lost")
                self.stats[name] += 1
                if name == "lost":
                    log.warning("%s: task %s was no longer ours (lease lost, cancelled or "
                                "requeued); its outcome was discarded", self.worker_id, task.task_id)

    def release(self, tasks: list[RunningTask]) -> None:
        """Hand tasks back to the front of their queues (a stopping worker)."""
        if not tasks:
            return
        try:
            self.store.release([(t.task_id, t.token) for t in tasks])
        except REDIS_DOWN as exc:  # their leases will expire and the reaper returns them
            self.outage.noticed(exc)
        with self.lock:
            for task in tasks:
                self.held.pop(task.task_id, None)
