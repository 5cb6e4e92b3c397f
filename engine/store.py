"""The engine's persistence layer: one method per Lua script, each one round trip.

Public verbs (``TaskQueue``, ``TaskWorker``) decide what should happen; the methods here
only build each script's ARGV and call it with the KEYS that ``SCRIPT_KEYS`` lists for it
(in the order its header documents: tests/test_scripts.py checks the two agree). Moving
the bytes is ``engine/wire.py``'s.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import redis

from .config import Settings
from .errors import IdempotencyConflict
from .keys import Keys
from .scripting import register_all
from .wire import Wire, read

# Times are milliseconds everywhere below this line.
IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
WORKER_RECORD_TTL_MS = 24 * 3600 * 1000
REAP_CHUNK = 500      # expired leases per reap call: one call stays short however many there are

_STATUSES = ("pending", "scheduled", "running", "completed", "failed", "retry", "cancelled")

# Every script's KEYS, as its header lists them: (keys, the name of the one record the call
# is about: a task id, a worker id, a schedule name or an idempotency key; '' when none).
SCRIPT_KEYS: dict[str, Callable[[Keys, str], list[str]]] = {
    "submit": lambda k, _: [
        k.task_prefix, *k.queues, k.status["pending"], k.status["scheduled"], k.scheduled,
        k.marker, k.events_log, k.events, k.stats, k.minute_stats_prefix, k.idempotency_prefix,
        k.children_prefix],
    "open_batch": lambda k, _: [k.idempotency_prefix, *k.batch_keys],
    "claim": lambda k, _: [
        k.task_prefix, *k.queues, k.status["pending"], k.status["running"], k.leases, k.marker,
        k.events_log, k.events, k.minute_stats_prefix, k.routed, k.workers, k.worker(""),
        k.status["failed"], k.stats, k.handled, k.limit_prefix, k.limits_due, k.limits,
        k.budgets, k.usage_prefix, k.serial_prefix, k.serials, *k.batch_keys],
    "complete": lambda k, _: [
        k.task_prefix, k.result_prefix, k.done_prefix, k.status["running"], k.status["completed"],
        k.leases, k.events_log, k.events, k.stats, k.minute_stats_prefix, *k.batch_keys],
    "fail": lambda k, _: [
        k.task_prefix, k.result_prefix, k.done_prefix, k.status["running"], k.status["retry"],
        k.status["failed"], k.leases, k.scheduled, k.events_log, k.events, k.stats,
        k.minute_stats_prefix, *k.batch_keys],
    "settle": lambda k, _: [k.task_prefix, k.limit_prefix, k.limits_due, k.limits, k.marker],
    "defer": lambda k, _: [
        k.task_prefix, k.limit_prefix, k.limits_due, k.limits, k.status["running"],
        k.status["pending"], k.status["retry"], k.status["failed"], k.leases, k.scheduled,
        k.events_log, k.events, k.stats, *k.batch_keys],
    "release": lambda k, _: [
        k.task_prefix, *k.queues, k.leases, k.status["running"], k.status["pending"], k.marker,
        k.events_log, k.events],
    "promote": lambda k, _: [
        k.task_prefix, *k.queues, k.scheduled, k.status["pending"], k.status["scheduled"],
        k.status["retry"], k.marker, k.events_log, k.events, k.status["failed"], k.stats,
        *k.batch_keys],
    "reap": lambda k, _: [
        k.task_prefix, *k.queues, k.leases, k.status["running"], k.status["pending"],
        k.status["failed"], k.result_prefix, k.done_prefix, k.marker, k.events_log, k.events,
        k.stats, k.workers, k.worker(""), k.limit_prefix, *k.batch_keys],
    "cancel": lambda k, task_id: [
        k.task(task_id), *k.queues, k.scheduled, k.leases, k.status["pending"],
        k.status["scheduled"], k.status["retry"], k.status["running"], k.status["cancelled"],
        k.result(task_id), k.done(task_id), k.events_log, k.events, k.stats, k.routed,
        k.cancels, k.limit_prefix, *k.batch_keys],
    "retry": lambda k, task_id: [
        k.task(task_id), *k.queues, k.status["failed"], k.status["cancelled"], k.status["pending"],
        k.result(task_id), k.marker, k.events_log, k.events, k.done(task_id), *k.batch_keys],
    "requeue": lambda k, task_id: [
        k.task(task_id), *k.queues, k.scheduled, k.leases, k.status["pending"],
        k.status["scheduled"], k.status["retry"], k.status["running"], k.marker, k.events_log,
        k.events, k.routed],
    "delete": lambda k, _: [
        k.task_prefix, *k.queues, k.scheduled, k.leases, k.result_prefix,
        *(k.status[s] for s in _STATUSES), k.events_log, k.events, k.routed, k.partial_prefix],
    "wait": lambda k, task_id: [k.task(task_id), k.result(task_id), k.done(task_id)],
    "heartbeat": lambda k, worker_id: [
        k.task_prefix, k.leases, k.workers, k.worker(worker_id), k.events_log, k.events, k.handled],
    "progress": lambda k, _: [k.task_prefix, k.partial_prefix, k.events_log, k.events],
    "usage": lambda k, _: [k.task_prefix, k.usage_total, k.usage_prefix, *k.usage_index.values()],
    "usage_totals": lambda k, _: [k.usage_total, k.usage_prefix, *k.usage_index.values()],
    "append_turn": lambda k, session_id: [k.conversation(session_id)],
    "worker_stop": lambda k, worker_id: [k.workers, k.worker(worker_id), k.events_log, k.events],
    "due_schedules": lambda k, _: [k.schedules],
    **{name: (lambda k, schedule: [k.schedule(schedule), k.schedules, k.events_log, k.events])
       for name in ("add_schedule", "fire_schedule", "pause_schedule", "resume_schedule",
                    "remove_schedule")},
}


class _Bookkeeping:
    """The script calls that move no task: the worker registry, recurring schedules, and
    the token and cost counts. ``Store`` inherits them (kept apart so that each class
    stays short enough to read in one sitting)."""

    settings: Settings
    lease_ms: int
    _run: Callable[..., Any]

    # -- tokens and cost (engine/usage.py) ---------------------------------------------
    def usage(self, items: Sequence[tuple[str, str, int, int, int, int | None]],
              client=None) -> list[int]:
        """Count model calls' tokens and cost (usage.lua, not fenced): (task id, model or
        '', prompt, completion and total tokens, cost in nanodollars or None when the
        model has no price) each; one code per item (1 counted, 0 no such task). Batch and
        session totals live twice the result TTL after their last count."""
        flat: list[Any] = [int(self.settings.result_ttl * 2000), len(items)]
        for task_id, model, prompt, completion, total, cost in items:
            flat.extend((task_id, model or "", prompt, completion, total,
                         "" if cost is None else cost))
        return self._run("usage", flat, client=client)

    def usage_totals(self, minutes: int, most: int) -> list:
        """Every token and cost total in one round trip: usage_totals.lua's reply."""
        return self._run("usage_totals", [minutes, most])

    # -- conversations (engine/agent/conversation.py) ----------------------------------
    def append_turn(self, session_id: str, task_id: str, query: str, answer: str,
                    most_messages: int, most_chars: int, ttl_ms: int) -> list[int]:
        """Append a task's query and answer to its session's conversation, capped, once
        per task: append_turn.lua's [code, messages kept]."""
        return self._run("append_turn", [task_id, query, answer, most_messages, most_chars,
                                         ttl_ms], record=session_id)

    # -- worker registry --------------------------------------------------------------
    def heartbeat(self, worker_id: str, fields: dict[str, Any],
                  held: Iterable[tuple[str, str]]) -> list[str]:
        """Renew leases and the worker record; returns lost id/status pairs, flat."""
        pairs = [v for item in fields.items() for v in item]
        flat = [v for item in held for v in item]
        return self._run("heartbeat", [worker_id, self.lease_ms, WORKER_RECORD_TTL_MS,
                                       len(fields), *pairs, *flat], record=worker_id)

    def worker_stop(self, worker_id: str, fields: dict[str, Any]) -> None:
        """Take a worker out of the registry after a clean stop."""
        pairs = [v for item in fields.items() for v in item]
        self._run("worker_stop", [worker_id, WORKER_RECORD_TTL_MS, len(fields), *pairs],
                  record=worker_id)

    # -- recurring schedules (engine.scheduler) ---------------------------------------
    def due_schedules(self, limit: int = 100) -> tuple[int, list[tuple[str, int]]]:
        """(now in ms, [(name, next fire ms), ...]) for the schedules due now."""
        out = self._run("due_schedules", [limit])
        pairs = [(out[i], int(float(out[i + 1]))) for i in range(1, len(out), 2)]
        return int(out[0]), pairs

    def add_schedule(self, name: str, cron: str, timezone: str, misfire: str, template: str,
                     next_fire_ms: int) -> int:
        """Create or update a schedule: 1 created, 2 updated, 0 unchanged."""
        return int(self._run("add_schedule", [name, cron, timezone, misfire, template,
                                              next_fire_ms], record=name))

    def fire_schedule(self, name: str, tick_ms: str, next_fire_ms: int, task_id: str = "",
                      reason: str = "") -> int:
        """Advance a schedule past ``tick_ms`` if it is still there: 1, 0 stale, -1 missing."""
        return int(self._run("fire_schedule", [name, tick_ms, next_fire_ms, task_id, reason],
                             record=name))

    def pause_schedule(self, name: str) -> int:
        """1 paused, 0 already paused, -1 missing."""
        return int(self._run("pause_schedule", [name], record=name))

    def resume_schedule(self, name: str, next_fire_ms: int) -> int:
        """1 resumed, 0 was not paused, -1 missing."""
        return int(self._run("resume_schedule", [name, next_fire_ms], record=name))

    def remove_schedule(self, name: str) -> int:
        """1 removed, 0 missing."""
        return int(self._run("remove_schedule", [name], record=name))


class Store(_Bookkeeping):
    """Runs the state-transition scripts for one namespace on one Redis client.

    ``now_ms`` is a clock override for tests: when given, its value is passed to every
    script instead of letting Redis read ``TIME``.
    """

    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings,
                 now_ms: Callable[[], int] | None = None):
        self.client = client
        self.keys = keys
        self.settings = settings
        self.wire = Wire(client, settings.reply_spin_us)
        self._now = now_ms
        self._scripts = register_all(client)
        self._maxlen = str(settings.events_max_len)
        # The key lists of the scripts that name no single record, built once.
        self._fixed = {name: build(keys, "") for name, build in SCRIPT_KEYS.items()}

    # -- helpers ----------------------------------------------------------------------
    def script_pipeline(self) -> Any:
        """Collects many script calls (``client=`` of the methods below) for one round
        trip. redis-py's cluster client refuses scripts in a pipeline; there the calls run
        one by one, with the same ``execute()`` at the end."""
        if self.wire.direct_ok:
            return self.client.pipeline(transaction=False)
        return _OneByOne(self.client)

    def now_arg(self) -> str:
        """ARGV[1] of every script: '' lets Redis read TIME; tests pass their clock."""
        return "" if self._now is None else str(int(self._now()))

    def _run(self, name: str, args: Sequence[Any], record: str = "", client=None,
             spin: bool = False) -> Any:
        """Run script ``name`` with its KEYS (those of ``record`` when it names one) and
        ARGV: the clock override, the events cap, then ``args``."""
        keys = SCRIPT_KEYS[name](self.keys, record) if record else self._fixed[name]
        return self.wire.run(self._scripts[name], keys, [self.now_arg(), self._maxlen, *args],
                             client=client, spin=spin)

    def _command(self, name: str, args: Sequence[Any], record: str = "") -> tuple:
        """The EVALSHA command of script ``name``, for a pipelined send."""
        keys = SCRIPT_KEYS[name](self.keys, record) if record else self._fixed[name]
        return ("EVALSHA", self._scripts[name].sha, len(keys), *keys, self.now_arg(),
                self._maxlen, *args)

    @property
    def _failed_ttl_ms(self) -> int:
        return int(self.settings.failed_ttl * 1000)

    @property
    def lease_ms(self) -> int:
        """Lease length in ms."""
        return int(self.settings.lease_timeout * 1000)

    # -- task transitions -------------------------------------------------------------
    def submit(self, rows: Sequence[Sequence[Any]], client=None) -> list[str]:
        """Submit tasks; each row holds the per-task values submit.lua documents."""
        return self._run("submit", self._submit_args(rows), client=client, spin=True)

    @staticmethod
    def _submit_args(rows: Sequence[Sequence[Any]]) -> list[Any]:
        flat: list[Any] = [len(rows), IDEMPOTENCY_TTL_MS]
        for row in rows:
            flat.extend(row)
        return flat

    def submit_streamed(self, chunks: Iterable[Sequence[Sequence[Any]]], count: int) -> list[list[str]]:
        """Submit ``count`` chunks of rows, in order, overlapping the encoding of one with
        Redis running the one before (engine/wire.py: Wire.stream)."""
        if count == 1 or not self.wire.direct_ok:
            # One chunk, or Redis Cluster (no single connection to stream on).
            pipe = self.script_pipeline()
            for rows in chunks:
                self.submit(rows, client=pipe)
            return pipe.execute()
        return self.wire.stream(self._scripts["submit"], self._fixed["submit"],
                                ([self.now_arg(), self._maxlen, *self._submit_args(rows)]
                                 for rows in chunks), count)

    def open_batch(self, parent_id: str, idempotency_key: str | None, fingerprint: str) -> list:
        """Make a staged batch parent visible once its children are in: [code, id]
        (open_batch.lua's header has the codes)."""
        return self._run("open_batch", [parent_id, idempotency_key or "", fingerprint,
                                        IDEMPOTENCY_TTL_MS, int(self.settings.result_ttl * 1000)])

    def claim(self, worker_id: str, count: int, types: Sequence[str] = (),
              limits: Sequence[tuple[str, str]] = ()) -> list[str]:
        """Claim up to ``count`` pending tasks for a worker with handlers for ``types``,
        of which those in ``limits`` ((type, limit key) pairs) run under a provider limit;
        returns claim.lua's flat array."""
        return self._run("claim", self._claim_args(worker_id, count, types, limits))

    def _claim_args(self, worker_id: str, count: int, types: Sequence[str],
                    limits: Sequence[tuple[str, str]]) -> list[Any]:
        # A worker counts as live for routing while its heartbeat is younger than a lease:
        # the same silence after which the reaper calls it lost.
        return [worker_id, count, self.lease_ms, self.lease_ms, self._failed_ttl_ms,
                int(self.settings.handler_grace * 1000), int(self.settings.limit_horizon * 1000),
                len(limits), *(v for pair in limits for v in pair), *types]

    def wait_and_claim(self, worker_id: str, count: int, timeout: float,
                       types: Sequence[str] = (),
                       limits: Sequence[tuple[str, str]] = ()) -> tuple[bool, list]:
        """Wait up to ``timeout`` s for the wake-up marker, then claim up to ``count``:
        (whether the marker woke us, claim.lua's reply). One round trip: the claim is
        pipelined behind the blocking pop, so Redis runs it the moment the pop returns.
        (The cluster client refuses scripts in pipelines: two calls there.)"""
        args = self._claim_args(worker_id, count, types, limits)
        conn = self.wire.pipelined(("BZPOPMIN", self.keys.marker, timeout),
                                   self._command("claim", args))
        if conn is None:
            woke = self.client.bzpopmin(self.keys.marker, timeout=timeout)
            return bool(woke), self._run("claim", args)
        try:
            woke = read(conn)
        except redis.ResponseError:
            conn.disconnect()       # the claim's reply would still be waiting on this socket
            raise
        try:
            flat = read(conn)
        except redis.exceptions.NoScriptError:
            flat = self._run("claim", args)      # reloads the script and claims
        return bool(woke), flat

    def complete(self, items: Sequence[tuple[str, str, str, int]]) -> list[int]:
        """Complete tasks: (id, token, result document JSON, duration ms) each."""
        flat: list[Any] = [int(self.settings.result_ttl * 1000), self.settings.max_finished_index,
                           len(items)]
        for item in items:
            flat.extend(item)
        return self._run("complete", flat)

    def fail(self, items: Sequence[tuple]) -> list[int]:
        """Fail tasks: (id, token, error, traceback, retry delay ms or -1, final doc[,
        reason]) each; the reason (``error`` when not given, or ``timeout``) is kept."""
        flat: list[Any] = [self._failed_ttl_ms, len(items)]
        for item in items:
            flat.extend(item if len(item) == 7 else (*item, "error"))
        return self._run("fail", flat)

    def progress(self, items: Sequence[tuple[str, str, str, str, str, int]],
                 event_text_bytes: int) -> list[int]:
        """Write running tasks' progress and streamed text: (id, token, fraction or '',
        message, text to append, bytes sent before it) each; one code per task (1
        written, -3 lease lost). Events carry texts of up to ``event_text_bytes``."""
        flat: list[Any] = [int(self.settings.result_ttl * 1000), event_text_bytes]
        for item in items:
            flat.extend(item)
        return self._run("progress", flat)

    def settle(self, items: Sequence[Sequence[Any]]) -> int:
        """Free and learn from calls made under provider limit keys: the 11 values each
        that settle.lua documents. Returns how many were settled."""
        return int(self._run("settle", [v for item in items for v in item]))

    def defer(self, items: Sequence[tuple[str, str, str, int, bool, bool]]) -> list[int]:
        """Put rate-limited tasks back without spending an attempt: (id, token, limit key,
        ms until it frees, park on the key?, rate headers seen?) each; codes as
        defer.lua's header says (1 deferred, 2 failed past the horizon, -3 lease lost)."""
        flat: list[Any] = [int(self.settings.limit_horizon * 1000), self._failed_ttl_ms]
        for task_id, token, key, delay_ms, park, headers in items:
            flat.extend((task_id, token, key, int(delay_ms), "1" if park else "0",
                         "1" if headers else "0"))
        return self._run("defer", flat)

    def wake(self) -> None:
        """Set the wake-up marker: a waiting worker claims at once (a conversation's turn
        has passed to its next task)."""
        self.client.zadd(self.keys.marker, {"0": 0})

    def release(self, items: Iterable[tuple[str, str]]) -> int:
        """Hand tasks back to the front of their queues: (id, token) each."""
        flat = [v for item in items for v in item]
        return self._run("release", flat) if flat else 0

    def promote(self, limit: int = 1000) -> tuple[int, int]:
        """Move due scheduled/retry tasks to pending: (moved, ms to next due or -1)."""
        moved, next_due = self._run("promote", [limit, self._failed_ttl_ms,
                                                int(self.settings.aging * 1000)])
        return int(moved), int(next_due)

    def reap(self, worker_timeout_ms: int, limit: int = REAP_CHUNK) -> tuple[int, int, int, int]:
        """Recover up to ``limit`` expired leases and mark silent workers lost:
        (requeued, failed, lost, expired leases handled)."""
        out = self._run("reap", [self.settings.max_stalls, limit, self._failed_ttl_ms,
                                 worker_timeout_ms])
        return int(out[0]), int(out[1]), int(out[2]), int(out[3])

    def cancel(self, task_id: str, doc: str, client=None, by: str = "", why: str = "") -> list:
        """Cancel one task (``by`` whom, ``why``): [code, previous status]."""
        return self._run("cancel", [int(self.settings.result_ttl * 1000), task_id, doc, by, why],
                         record=task_id, client=client)

    def retry(self, task_id: str, priority: str = "", client=None) -> list:
        """Run a failed or cancelled task again: [code, previous status]."""
        return self._run("retry", [task_id, priority], record=task_id, client=client)

    def requeue(self, task_id: str, priority: str = "") -> list:
        """Put an unfinished task back in line now: [code, previous status]."""
        return self._run("requeue", [task_id, priority], record=task_id)

    def delete(self, task_ids: Sequence[str]) -> int:
        """Delete tasks entirely; returns how many existed."""
        return int(self._run("delete", list(task_ids))) if task_ids else 0

    def wait(self, task_id: str) -> list[str]:
        """Mark the task as waited on: [status or '', result document or '']."""
        return self._run("wait", [], record=task_id)

    def wait_and_read(self, task_id: str, timeout: float) -> tuple[str, str]:
        """Mark the task as waited on and wait up to ``timeout`` s for its end:
        (status or '' for no such task, result document or ''). One round trip: the
        blocking read is pipelined behind wait.lua, which leaves the document of a task
        that has ended already where that read finds it."""
        done = self.keys.done(task_id)
        conn = self.wire.pipelined(self._command("wait", [], record=task_id),
                                   ("BRPOPLPUSH", done, done, timeout))
        if conn is None:                 # Redis Cluster: two calls
            status, doc = self.wait(task_id)
            if status and not doc:
                doc = self.wire.blocking_read(done, timeout) or ""
            return status, doc
        try:
            status, doc = read(conn)
        except redis.exceptions.NoScriptError:
            conn.disconnect()            # drop the blocking read queued behind it
            status, doc = self.wait(task_id)   # reloads the script
            if status and not doc:
                doc = self.wire.blocking_read(done, timeout) or ""
            return status, doc
        if not status or (not doc and status in ("completed", "failed", "cancelled")):
            conn.disconnect()            # nothing will ever arrive: do not sit out the read
            return status, doc
        popped = read(conn)              # at once when wait.lua found the task ended
        return status, doc or popped or ""


def accepted_ids(replies: list, tasks: Sequence[Any]) -> list[str]:
    """submit.lua's reply as ids; raises IdempotencyConflict when a task's idempotency key
    named a task with other content (nothing was written for it; in a bulk submit the
    others were, and the error lists every id)."""
    conflicts = [(task, reply[0]) for task, reply in zip(tasks, replies) if isinstance(reply, list)]
    if not conflicts:
        return replies
    task, existing = conflicts[0]
    error = IdempotencyConflict(
        f"idempotency key {task.idempotency_key!r} was used for task {existing} with other "
        f"content; nothing was written for this task (use a new key for new content)"
        + (f" ({len(conflicts)} tasks of this call conflict)" if len(conflicts) > 1 else ""),
        existing)
    error.ids = [reply[0] if isinstance(reply, list) else reply for reply in replies]
    raise error


class _OneByOne:
    """Stands in for a pipeline of script calls on Redis Cluster: runs each at once."""

    def __init__(self, client: Any):
        self._client = client
        self._replies: list[Any] = []

    def evalsha(self, *args: Any) -> Any:
        """Run the script now; its reply is returned again by :meth:`execute`."""
        reply = self._client.evalsha(*args)
        self._replies.append(reply)
        return reply

    def script_load(self, script: str) -> str:
        """Load a script the server lost (redis-py's Script retries with it)."""
        return self._client.script_load(script)

    def execute(self) -> list[Any]:
        """The replies, in call order."""
        replies, self._replies = self._replies, []
        return replies
