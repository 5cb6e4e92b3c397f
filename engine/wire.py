"""The hot path to Redis: script calls over a connection of the calling thread's own.

``engine/store.py`` decides which script runs with which KEYS and ARGV; this module only
moves the bytes. Each trick here is kept because a measurement showed it pays (the figures
are in docs/ARCHITECTURE.md, "Throughput and latency"); everything else uses redis-py's
ordinary calls. On Redis Cluster (no connection pool: routing needs the client) every
call goes through redis-py.
"""
from __future__ import annotations

import os
import select
import socket
import threading
from itertools import chain
from typing import Any, Iterable, Sequence

import redis

try:   # hiredis packs a command in a third of redis-py's time (measured: 3 µs vs 9 µs)
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - hiredis is in requirements.txt
    _pack_command = None

from . import clock
from .errors import refusal


class Wire:
    """Script calls on ``client``: over this thread's own connection when the client has
    a pool, through redis-py otherwise. ``spin_us`` is how long a call made with
    ``spin=True`` watches its socket for the reply before sleeping on it."""

    def __init__(self, client: redis.Redis, spin_us: int = 0):
        self.client = client
        self._local = threading.local()
        self._spin_ns = spin_us * 1000
        self.direct_ok = hasattr(client, "connection_pool")

    # -- script calls -----------------------------------------------------------------
    def run(self, script: Any, keys: Sequence[str], args: Sequence[Any], client: Any = None,
            spin: bool = False) -> Any:
        """EVALSHA ``script`` (a redis-py Script); on ``client`` (a pipeline) when given."""
        conn = self.direct() if client is None else None
        if conn is None:
            return script(keys=keys, args=args, client=client)
        return self._evalsha(conn, script, keys, args, spin)

    def _evalsha(self, conn: Any, script: Any, keys: Sequence[str], args: Sequence[Any],
                 spin: bool = False) -> Any:
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        send(conn, command)
        if spin:
            self._await_reply(conn)
        try:
            return read(conn)
        except redis.exceptions.NoScriptError:   # the server lost its scripts (a restart)
            send(conn, ("SCRIPT", "LOAD", script.script), command)
            read(conn)
            return read(conn)

    def pipelined(self, *commands: Sequence[Any]) -> Any:
        """Send ``commands`` in one write on this thread's connection and return it, for
        the caller to read the replies in order (:func:`read`); None on Redis Cluster."""
        conn = self.direct()
        if conn is not None:
            send(conn, *commands)
        return conn

    def blocking_read(self, key: str, timeout: float) -> Any:
        """BRPOPLPUSH ``key`` onto itself: the newest item, left in place for other
        readers, or None after ``timeout`` s."""
        conn = self.direct()
        if conn is None:
            return self.client.brpoplpush(key, key, timeout=timeout)
        send(conn, ("BRPOPLPUSH", key, key, timeout))
        return read(conn)

    def stream(self, script: Any, keys: Sequence[str], arg_lists: Iterable[Sequence[Any]],
               count: int) -> list[Any]:
        """Run ``script`` once per item of ``arg_lists`` (``count`` of them) on one
        connection: this thread builds, encodes and sends call after call while a reader
        thread collects the replies, so Python's work on one call overlaps Redis running
        the one before. Calls run in order; the replies are returned in order."""
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
            for args in arg_lists:
                conn.send_packed_command(conn.pack_command(
                    "EVALSHA", sha, len(keys), *chain(keys, args)), False)
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

    # -- this thread's connection -----------------------------------------------------
    # The hot calls skip redis-py's command machinery (pool checkout, retries, metrics):
    # measured here at about as much time as the round trip itself. Each thread keeps its
    # own connection, so a blocking read never holds up another thread's calls.
    def direct(self) -> Any:
        """This thread's own connection, or None on Redis Cluster (routing needs the client)."""
        if not self.direct_ok:
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

    def _await_reply(self, conn: Any) -> None:
        """Watch the socket for up to ``spin_us`` before the blocking read.

        Measured on this project's 2-core VM: a thread that sleeps in recv() and is woken
        by the reply adds ~50 µs to a ~25 µs loopback round trip. Polling with a zero
        timeout releases the GIL on every syscall, and the budget bounds the CPU spent
        when the reply is slow (a remote Redis, a long script): after it, the read sleeps
        as before. Only submits may spin: when workers spun too, light-load p99 latency on
        two cores went from ~1.0 ms to 1.4-2.8 ms (the spinners crowd out Redis itself)."""
        sock = getattr(conn, "_sock", None)
        if not self._spin_ns or not _is_plain(sock):
            return
        poll, now_ns = self._poller(sock).poll, clock.monotonic_ns
        deadline = now_ns() + self._spin_ns
        while not poll(0) and now_ns() < deadline:
            pass


def send(conn: Any, *commands: Sequence[Any]) -> None:
    """Write ``commands`` to ``conn`` in one write (reconnecting once if the connection
    dropped while idle)."""
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


def read(conn: Any) -> Any:
    """The next reply on ``conn``; Redis's passing refusals to write come out as
    :class:`engine.errors.RedisRefused`."""
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
