"""The engine's persistence layer: one method per Lua script, each one round trip.

Public verbs (``TaskQueue``, ``TaskWorker``) decide what should happen; the methods here
only build each script's KEYS and ARGV (in the order its header documents) and call it.
"""
from __future__ import annotations

import os
import select
import socket
import threading
from itertools import chain
from typing import Any, Callable, Iterable, Sequence

import redis

try:   # hiredis packs a command in a third of redis-py's time (measured: 3 µs vs 9 µs)
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - hiredis is in requirements.txt
    _pack_command = None

from . import clock
from .config import Settings
from .errors import IdempotencyConflict, refusal
from .keys import Keys
from .scripting import register_all

# Times are milliseconds everywhere below this line.
IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
WORKER_RECORD_TTL_MS = 24 * 3600 * 1000
REAP_CHUNK = 500      # expired leases per reap call: one call stays short however many there are


class Store:
    """Runs the state-transition scripts for one namespace on one Redis client.

    ``now_ms`` is a clock override for tests: when given, its value is passed to every
    script instead of letting Redis read ``TIME``.
    """

    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings,
                 now_ms: Callable[[], int] | None = None):
        self.client = client
        self.keys = keys
        self.settings = settings
        self._now = now_ms
        self._local = threading.local()
        self._scripts = register_all(client)
        self._maxlen = str(settings.events_max_len)
        self._spin_ns = settings.reply_spin_us * 1000
        k = keys
        self._queue_keys = list(k.queues)
        self._claim_keys = [k.task_prefix, *k.queues, k.status["pending"], k.status["running"],
                            k.leases, k.marker, k.events_log, k.events, k.minute_stats_prefix,
                            k.routed, k.workers, k.worker(""), k.status["failed"], k.stats,
                            k.handled, *k.batch_keys]
        self._complete_keys = [k.task_prefix, k.result_prefix, k.done_prefix, k.status["running"],
                               k.status["completed"], k.leases, k.events_log, k.events, k.stats,
                               k.minute_stats_prefix, *k.batch_keys]
        self._fail_keys = [k.task_prefix, k.result_prefix, k.done_prefix, k.status["running"],
                           k.status["retry"], k.status["failed"], k.leases, k.scheduled,
                           k.events_log, k.events, k.stats, k.minute_stats_prefix, *k.batch_keys]
        self._submit_keys = [k.task_prefix, *k.queues, k.status["pending"], k.status["scheduled"],
                             k.scheduled, k.marker, k.events_log, k.events, k.stats,
                             k.minute_stats_prefix, k.idempotency_prefix, k.children_prefix]

    # -- helpers ----------------------------------------------------------------------
    def script_pipeline(self) -> Any:
        """Collects many script calls (``client=`` of the methods below) for one round
        trip. redis-py's cluster client refuses scripts in a pipeline; there the calls run
        one by one, with the same ``execute()`` at the end."""
        if hasattr(self.client, "connection_pool"):
            return self.client.pipeline(transaction=False)
        return _OneByOne(self.client)

    def now_arg(self) -> str:
        """ARGV[1] of every script: '' lets Redis read TIME; tests pass their clock."""
        return "" if self._now is None else str(int(self._now()))

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any], client=None,
             spin: bool = False) -> Any:
        script, full = self._scripts[name], [self.now_arg(), self._maxlen, *args]
        conn = self._direct() if client is None else None
        if conn is None:
            return script(keys=keys, args=full, client=client)
        return self._evalsha(conn, script, keys, full, spin)

    # The hot calls skip redis-py's command machinery (pool checkout, retries, metrics):
    # measured here at about as much time as the round trip itself. Each thread keeps its
    # own connection, so a blocking read never holds up another thread's calls.
    def _direct(self) -> Any:
        """This thread's own connection, or None on Redis Cluster (routing needs the client)."""
        if not hasattr(self.client, "connection_pool"):
            return None
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # Made directly, not through the pool: it belongs to this thread, is closed
            # when the thread ends, and must not count against the pool's limit.
            pool = self.client.connection_pool
            conn = self._local.conn = pool.connection_class(**pool.connection_kwargs)
        sock = getattr(conn, "_sock", None)     # redis-py's socket; None until connected
        try:
            # As redis-py's pool does: a socket with something to read before we asked
            # (the server closed it, say after a restart) is stale. On a plain socket this
            # thread's poll object answers in one syscall; redis-py's can_read (which also
            # connects when need be, and sees TLS's buffered bytes) builds one each time.
            if _is_plain(sock):
                stale = bool(self._poller(sock).poll(0))
            else:
                stale = conn.can_read()
            if stale:
                conn.disconnect()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            conn.disconnect()
        return conn

    def _poller(self, sock: socket.socket) -> Any:
        """This thread's poll object watching ``sock`` for input (made anew for a new socket)."""
        local = self._local
        if getattr(local, "polled", None) is not sock:
            local.poller = select.poll()
            local.poller.register(sock, select.POLLIN)
            local.polled = sock
        return local.poller

    @staticmethod
    def _send(conn: Any, *commands: Sequence[Any]) -> None:
        if _pack_command is None:
            packed = conn.pack_commands(commands)
        else:
            packed = [_pack_command(tuple(command)) for command in commands]
        sock = getattr(conn, "_sock", None)
        try:
            if _is_plain(sock):
                _write_all(sock, b"".join(packed))
            else:
                conn.send_packed_command(packed, False)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            # Not delivered (say, a connection dropped while idle): reconnect, send once more.
            conn.disconnect()
            conn.send_packed_command(packed, False)

    def _await_reply(self, conn: Any) -> None:
        """Watch the socket for up to QUEUE_REPLY_SPIN_US before the blocking read.

        Measured on this project's 2-core VM: a thread that sleeps in recv() and is woken
        by the reply adds ~50 µs to a ~25 µs loopback round trip, so one submit at a time
        ran at half the rate. Polling with a zero timeout releases the GIL on every
        syscall, and the budget bounds the CPU spent when the reply is slow (a remote
        Redis, a long script): after it, the read sleeps as before.

        Only submits spin. A worker gains nothing (its calls are batched, or followed by
        a blocking wait), and when workers spun too, light-load p99 latency on two cores
        went from ~1.0 ms to 1.4–2.8 ms: the spinners crowd out Redis itself."""
        sock = getattr(conn, "_sock", None)
        if not self._spin_ns or not _is_plain(sock):
            return
        poll, now_ns = self._poller(sock).poll, clock.monotonic_ns
        deadline = now_ns() + self._spin_ns
        while not poll(0) and now_ns() < deadline:
            pass

    @staticmethod
    def _read(conn: Any) -> Any:
        try:
            return conn.read_response()
        except BaseException as exc:
            # An error reply was read whole; anything else (a dropped connection, a
            # timeout, Ctrl+C mid-read) may leave part of a reply behind: never reuse a
            # half-read connection.
            if not isinstance(exc, redis.ResponseError):
                conn.disconnect()
                raise
            refused = refusal(exc)
            if refused is None:
                raise
            if isinstance(exc, redis.exceptions.ReadOnlyError):
                conn.disconnect()       # a replica now: the next connect finds the primary
            raise refused from exc

    def _evalsha(self, conn: Any, script: Any, keys: Sequence[str], args: Sequence[Any],
                 spin: bool = False) -> Any:
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        self._send(conn, command)
        if spin:
            self._await_reply(conn)
        try:
            return self._read(conn)
        except redis.exceptions.NoScriptError:   # the server lost its scripts (a restart)
            self._send(conn, ("SCRIPT", "LOAD", script.script), command)
            self._read(conn)
            return self._read(conn)

    def blocking_read(self, key: str, timeout: float) -> Any:
        """BRPOPLPUSH ``key`` onto itself: the newest item, left in place for other
        readers, or None after ``timeout`` s."""
        conn = self._direct()
        if conn is None:
            return self.client.brpoplpush(key, key, timeout=timeout)
        self._send(conn, ("BRPOPLPUSH", key, key, timeout))
        return self._read(conn)

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
        flat: list[Any] = []
        for row in rows:
            flat.extend(row)
        return self._run("submit", self._submit_keys,
                         [len(rows), IDEMPOTENCY_TTL_MS, *flat], client=client, spin=True)

    def submit_streamed(self, chunks: Iterable[Sequence[Sequence[Any]]], count: int) -> list[list[str]]:
        """Submit ``count`` chunks of rows on one connection: this thread builds, encodes
        and sends chunk after chunk while a reader thread collects the replies, so Python's
        work on one chunk overlaps Redis running the one before. Chunks run in order."""
        if count == 1 or not hasattr(self.client, "connection_pool"):
            # One chunk, or Redis Cluster (no single connection to stream on).
            pipe = self.script_pipeline()
            for rows in chunks:
                self.submit(rows, client=pipe)
            return pipe.execute()
        script = self._scripts["submit"]
        sha = self.client.script_load(script.script)   # EVALSHA must not meet NOSCRIPT midway
        conn = self.client.connection_pool.get_connection()
        replies: list[Any] = []

        def read_all() -> None:
            try:
                for _ in range(count):
                    replies.append(conn.read_response())
            except Exception as exc:  # handed to the sending thread below
                replies.append(exc)

        reader = threading.Thread(target=read_all, daemon=True)
        try:
            reader.start()
            for rows in chunks:
                conn.send_packed_command(conn.pack_command(
                    "EVALSHA", sha, len(self._submit_keys), *self._submit_keys, self.now_arg(),
                    self._maxlen, len(rows), IDEMPOTENCY_TTL_MS, *chain.from_iterable(rows)), False)
            reader.join()
        except BaseException:
            conn.disconnect()
            raise
        finally:
            self.client.connection_pool.release(conn)
        for reply in replies:
            if isinstance(reply, BaseException):
                conn.disconnect()
                raise reply
        return replies

    def open_batch(self, parent_id: str, idempotency_key: str | None, fingerprint: str) -> list:
        """Make a staged batch parent visible once its children are in: [code, id]
        (open_batch.lua's header has the codes)."""
        k = self.keys
        idem = k.idempotency(idempotency_key) if idempotency_key else k.idempotency_prefix
        return self._run("open_batch", [k.task(parent_id), idem, *k.batch_keys],
                         [parent_id, "1" if idempotency_key else "", fingerprint,
                          IDEMPOTENCY_TTL_MS, int(self.settings.result_ttl * 1000)])

    def claim(self, worker_id: str, count: int, types: Sequence[str] = ()) -> list[str]:
        """Claim up to ``count`` pending tasks for a worker with handlers for ``types``;
        returns claim.lua's flat array."""
        return self._run("claim", self._claim_keys, self._claim_args(worker_id, count, types))

    def _claim_args(self, worker_id: str, count: int, types: Sequence[str]) -> list[Any]:
        # A worker counts as live for routing while its heartbeat is younger than a lease:
        # the same silence after which the reaper calls it lost.
        return [worker_id, count, self.lease_ms, self.lease_ms, self._failed_ttl_ms,
                int(self.settings.handler_grace * 1000), *types]

    def wait_and_claim(self, worker_id: str, count: int, timeout: float,
                       types: Sequence[str] = ()) -> tuple[bool, list]:
        """Wait up to ``timeout`` s for the wake-up marker, then claim up to ``count``:
        (whether the marker woke us, claim.lua's reply). One round trip: the claim is
        pipelined behind the blocking pop, so Redis runs it the moment the pop returns.
        (The cluster client refuses scripts in pipelines: two calls there.)"""
        conn = self._direct()
        if conn is None:
            woke = self.client.bzpopmin(self.keys.marker, timeout=timeout)
            return bool(woke), self.claim(worker_id, count, types)
        self._send(conn, ("BZPOPMIN", self.keys.marker, timeout),
                   ("EVALSHA", self._scripts["claim"].sha, len(self._claim_keys),
                    *self._claim_keys, self.now_arg(), self._maxlen,
                    *self._claim_args(worker_id, count, types)))
        try:
            woke = self._read(conn)
        except redis.ResponseError:
            conn.disconnect()       # the claim's reply would still be waiting on this socket
            raise
        try:
            flat = self._read(conn)
        except redis.exceptions.NoScriptError:
            flat = self.claim(worker_id, count)      # reloads the script and claims
        return bool(woke), flat

    def complete(self, items: Sequence[tuple[str, str, str, int]]) -> list[int]:
        """Complete tasks: (id, token, result document JSON, duration ms) each."""
        flat: list[Any] = []
        for item in items:
            flat.extend(item)
        ttl = int(self.settings.result_ttl * 1000)
        return self._run("complete", self._complete_keys,
                         [ttl, self.settings.max_finished_index, len(items), *flat])

    def fail(self, items: Sequence[tuple[str, str, str, str, int, str]]) -> list[int]:
        """Fail tasks: (id, token, error, traceback, retry delay ms or -1, final doc) each."""
        flat: list[Any] = []
        for item in items:
            flat.extend(item)
        ttl = int(self.settings.failed_ttl * 1000)
        return self._run("fail", self._fail_keys, [ttl, len(items), *flat])

    def release(self, items: Iterable[tuple[str, str]]) -> int:
        """Hand tasks back to the front of their queues: (id, token) each."""
        k = self.keys
        flat = [v for item in items for v in item]
        if not flat:
            return 0
        return self._run("release", [k.task_prefix, *k.queues, k.leases, k.status["running"],
                                     k.status["pending"], k.marker, k.events_log, k.events], flat)

    def promote(self, limit: int = 1000) -> tuple[int, int]:
        """Move due scheduled/retry tasks to pending: (moved, ms to next due or -1)."""
        k = self.keys
        moved, next_due = self._run("promote", [
            k.task_prefix, *k.queues, k.scheduled, k.status["pending"], k.status["scheduled"],
            k.status["retry"], k.marker, k.events_log, k.events, k.status["failed"], k.stats,
            *k.batch_keys], [limit, self._failed_ttl_ms])
        return int(moved), int(next_due)

    def reap(self, worker_timeout_ms: int, limit: int = REAP_CHUNK) -> tuple[int, int, int, int]:
        """Recover up to ``limit`` expired leases and mark silent workers lost:
        (requeued, failed, lost, expired leases handled)."""
        k = self.keys
        out = self._run("reap", [
            k.task_prefix, *k.queues, k.leases, k.status["running"], k.status["pending"],
            k.status["failed"], k.result_prefix, k.done_prefix, k.marker, k.events_log,
            k.events, k.stats, k.workers, k.worker(""), *k.batch_keys],
            [self.settings.max_stalls, limit, self._failed_ttl_ms, worker_timeout_ms])
        return int(out[0]), int(out[1]), int(out[2]), int(out[3])

    def cancel(self, task_id: str, doc: str, client=None) -> list:
        """Cancel one task: [code, previous status]."""
        k = self.keys
        return self._run("cancel", [
            k.task(task_id), *k.queues, k.scheduled, k.leases, k.status["pending"],
            k.status["scheduled"], k.status["retry"], k.status["running"], k.status["cancelled"],
            k.result(task_id), k.done(task_id), k.events_log, k.events, k.stats, k.routed,
            *k.batch_keys],
            [int(self.settings.result_ttl * 1000), task_id, doc], client=client)

    def retry(self, task_id: str, priority: str = "", client=None) -> list:
        """Run a failed or cancelled task again: [code, previous status]."""
        k = self.keys
        return self._run("retry", [
            k.task(task_id), *k.queues, k.status["failed"], k.status["cancelled"],
            k.status["pending"], k.result(task_id), k.marker, k.events_log, k.events,
            k.done(task_id), *k.batch_keys], [task_id, priority], client=client)

    def requeue(self, task_id: str, priority: str = "") -> list:
        """Put an unfinished task back in line now: [code, previous status]."""
        k = self.keys
        return self._run("requeue", [
            k.task(task_id), *k.queues, k.scheduled, k.leases, k.status["pending"],
            k.status["scheduled"], k.status["retry"], k.status["running"], k.marker,
            k.events_log, k.events, k.routed], [task_id, priority])

    def delete(self, task_ids: Sequence[str]) -> int:
        """Delete tasks entirely; returns how many existed."""
        if not task_ids:
            return 0
        k = self.keys
        statuses = [k.status[s] for s in ("pending", "scheduled", "running", "completed",
                                          "failed", "retry", "cancelled")]
        return int(self._run("delete", [k.task_prefix, *k.queues, k.scheduled, k.leases,
                                        k.result_prefix, *statuses, k.events_log, k.events,
                                        k.routed],
                             list(task_ids)))

    def wait(self, task_id: str) -> list[str]:
        """Mark the task as waited on: [status or '', result document or '']."""
        return self._run("wait", self._wait_keys(task_id), [])

    def _wait_keys(self, task_id: str) -> list[str]:
        return [self.keys.task(task_id), self.keys.result(task_id), self.keys.done(task_id)]

    def wait_and_read(self, task_id: str, timeout: float) -> tuple[str, str]:
        """Mark the task as waited on and wait up to ``timeout`` s for its end:
        (status or '' for no such task, result document or ''). One round trip: the
        blocking read is pipelined behind wait.lua, which leaves the document of a task
        that has ended already where that read finds it."""
        conn = self._direct()
        if conn is None:                 # Redis Cluster: two calls
            status, doc = self.wait(task_id)
            if status and not doc:
                doc = self.blocking_read(self.keys.done(task_id), timeout) or ""
            return status, doc
        keys, done = self._wait_keys(task_id), self.keys.done(task_id)
        self._send(conn, ("EVALSHA", self._scripts["wait"].sha, len(keys), *keys,
                          self.now_arg(), self._maxlen), ("BRPOPLPUSH", done, done, timeout))
        try:
            status, doc = self._read(conn)
        except redis.exceptions.NoScriptError:
            conn.disconnect()            # drop the blocking read queued behind it
            status, doc = self.wait(task_id)   # reloads the script
            if status and not doc:
                doc = self.blocking_read(done, timeout) or ""
            return status, doc
        if not status or (not doc and status in ("completed", "failed", "cancelled")):
            conn.disconnect()            # nothing will ever arrive: do not sit out the read
            return status, doc
        popped = self._read(conn)        # at once when wait.lua found the task ended
        return status, doc or popped or ""

    # -- worker registry --------------------------------------------------------------
    def heartbeat(self, worker_id: str, fields: dict[str, Any],
                  held: Iterable[tuple[str, str]]) -> list[str]:
        """Renew leases and the worker record; returns lost id/status pairs, flat."""
        k = self.keys
        pairs = [v for item in fields.items() for v in item]
        flat = [v for item in held for v in item]
        return self._run("heartbeat", [k.task_prefix, k.leases, k.workers, k.worker(worker_id),
                                       k.events_log, k.events, k.handled],
                         [worker_id, self.lease_ms, WORKER_RECORD_TTL_MS, len(fields), *pairs, *flat])

    def worker_stop(self, worker_id: str, fields: dict[str, Any]) -> None:
        """Take a worker out of the registry after a clean stop."""
        k = self.keys
        pairs = [v for item in fields.items() for v in item]
        self._run("worker_stop", [k.workers, k.worker(worker_id), k.events_log, k.events],
                  [worker_id, WORKER_RECORD_TTL_MS, len(fields), *pairs])

    # -- recurring schedules (engine.scheduler) ---------------------------------------
    def _schedule_keys(self, name: str) -> list[str]:
        k = self.keys
        return [k.schedule(name), k.schedules, k.events_log, k.events]

    def due_schedules(self, limit: int = 100) -> tuple[int, list[tuple[str, int]]]:
        """(now in ms, [(name, next fire ms), ...]) for the schedules due now."""
        out = self._run("due_schedules", [self.keys.schedules], [limit])
        pairs = [(out[i], int(float(out[i + 1]))) for i in range(1, len(out), 2)]
        return int(out[0]), pairs

    def add_schedule(self, name: str, cron: str, timezone: str, misfire: str, template: str,
                     next_fire_ms: int) -> int:
        """Create or update a schedule: 1 created, 2 updated, 0 unchanged."""
        return int(self._run("add_schedule", self._schedule_keys(name),
                             [name, cron, timezone, misfire, template, next_fire_ms]))

    def fire_schedule(self, name: str, tick_ms: str, next_fire_ms: int, task_id: str = "",
                      reason: str = "") -> int:
        """Advance a schedule past ``tick_ms`` if it is still there: 1, 0 stale, -1 missing."""
        return int(self._run("fire_schedule", self._schedule_keys(name),
                             [name, tick_ms, next_fire_ms, task_id, reason]))

    def pause_schedule(self, name: str) -> int:
        """1 paused, 0 already paused, -1 missing."""
        return int(self._run("pause_schedule", self._schedule_keys(name), [name]))

    def resume_schedule(self, name: str, next_fire_ms: int) -> int:
        """1 resumed, 0 was not paused, -1 missing."""
        return int(self._run("resume_schedule", self._schedule_keys(name), [name, next_fire_ms]))

    def remove_schedule(self, name: str) -> int:
        """1 removed, 0 missing."""
        return int(self._run("remove_schedule", self._schedule_keys(name), [name]))


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


def _is_plain(sock: Any) -> bool:
    """A connected TCP or unix socket without TLS (whose bytes only ssl may write and
    whose buffered input poll() cannot see), on a system with poll()."""
    return type(sock) is socket.socket and _HAS_POLL


_HAS_POLL = hasattr(select, "poll")


def _write_all(sock: socket.socket, data: bytes) -> None:
    """Send ``data`` with os.write. A socket with a timeout (ours have one) makes CPython
    poll before every send(); that syscall is skipped here, measured at 5-10% of a
    one-call submit. What the socket buffer does not take at once goes through sendall,
    which honours the timeout."""
    try:
        written = os.write(sock.fileno(), data)
    except BlockingIOError:
        written = 0
    if written < len(data):
        sock.sendall(data[written:])
