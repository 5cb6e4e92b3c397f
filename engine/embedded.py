"""Finding a Redis to talk to when nobody configured one.

`streamlit run` on a fresh machine must work with nothing else running, so the order of choice is
(see docs/ARCHITECTURE.md, "Running without a Redis server"):

1. the configured URL (``REDIS_URL`` or settings), when it answers;
2. a private ``redis-server`` subprocess on a free loopback port, when the binary exists;
3. ``fakeredis.TcpFakeServer`` in a background thread: a demo-only fallback, memory only and slower.

This module has no Streamlit import; the console and the tests both use it. fakeredis is imported
lazily so that production installs never load it unless the fallback is actually taken.
"""

from __future__ import annotations

import atexit
import builtins
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable
from .config import mask_url

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "EmbeddedRedis",
    "RedisServerProcess",
    "RedisUnavailableError",
    "free_port",
    "mask_url",
    "redis_server_binary",
    "resolve_redis_url",
    "start_embedded",
]

MODE_CONFIGURED = "configured"
MODE_REDIS_SERVER = "redis-server"
MODE_FAKEREDIS = "fakeredis"

# Debian's redis-server answers PING about 30 ms after exec; 5 s leaves room for a loaded CI box.
_START_TIMEOUT_S = 5.0
_STOP_TIMEOUT_S = 5.0
_CONFIGURED_PING_TIMEOUT_S = 1.0


class RedisUnavailableError(redis.exceptions.ConnectionError, builtins.ConnectionError):
    """The configured Redis did not answer.

    Derives from both redis-py's and the builtin ``ConnectionError`` so callers can catch either.
    The message never contains the URL's password (see :func:`mask_url`).
    """


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The port is released before returning, so another process may grab it in between; callers that
    start a server on it retry with a new port when the bind fails.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_binary() -> str | None:
    """Return the path of the ``redis-server`` executable on PATH, or None when it is not installed."""
    return shutil.which("redis-server")


def _ping(url: str, timeout: float) -> None:
    """PING ``url`` once, raising a redis-py error when it does not answer within ``timeout``.

    Retries are off: redis-py 8.1 retries three times with backoff by default, which would turn a
    1 s check into many seconds.
    """
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        protocol=2,
    )
    try:
        client.ping()
    finally:
        client.close()


# --- private redis-server process -------------------------------------------------------------

# Every running RedisServerProcess, so the atexit hook can stop the ones their owners forgot.
# Strong references on purpose: a server whose Python object was dropped must still be stopped.
_live_processes: "set[RedisServerProcess]" = set()
_live_lock = threading.Lock()


def _stop_all_at_exit() -> None:
    with _live_lock:
        procs = list(_live_processes)
    for proc in procs:
        try:
            proc.stop()
        except Exception:  # noqa: BLE001 - best effort while the interpreter exits
            pass


atexit.register(_stop_all_at_exit)


class RedisServerProcess:
    """A private ``redis-server`` subprocess on a loopback port, with persistence off.

    ``port=None`` picks a free port at the first :meth:`start` and keeps it across :meth:`restart`
    (reconnection tests need the same address to come back). ``data_dir=None`` uses a fresh
    temporary directory. Usable as a context manager.

    The process runs in its own session so that Ctrl+C in a terminal reaches only the Python parent,
    which then stops it in order (atexit). A parent killed with SIGKILL leaves it running: the
    kernel's parent-death signal was not used because it fires when the *thread* that spawned the
    child ends, and Streamlit starts servers from short-lived script threads.
    """

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        extra_args: Iterable[str] = (),
    ) -> None:
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
            # A data directory passed first by mistake would make every check "is it
            # running?" ask whatever answers on the default port: another server's data.
            raise TypeError(f"port must be an int or None, got {type(port).__name__}")
        self._port = port
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self.extra_args: tuple[str, ...] = tuple(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdout_file = None

    # -- properties

    @property
    def port(self) -> int:
        """The TCP port; chosen at the first start when none was given."""
        if self._port is None:
            raise RuntimeError("RedisServerProcess has no port yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The subprocess id while it runs, else None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def data_dir(self) -> Path:
        """The server's working directory (log file and any dump files live there)."""
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="redis-embedded-"))
        return self._data_dir

    @property
    def log_path(self) -> Path:
        """Path of the server's log file."""
        return self.data_dir / "redis.log"

    def is_running(self) -> bool:
        """True while the subprocess is alive."""
        return self.pid is not None

    # -- lifecycle

    def start(self) -> "RedisServerProcess":
        """Start the server and wait until it answers PING (about 5 s at most).

        Raises RuntimeError with the tail of the server log when it does not come up. When the port
        was picked automatically and the first attempt fails (another process took the port in the
        meantime), a few fresh ports are tried before giving up.
        """
        if self.is_running():
            return self
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed (not found on PATH)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A port given by the caller, or kept from an earlier start (restart), is never changed.
        attempts = 1 if self._port is not None else 3
        last_error: RuntimeError | None = None
        for _ in range(attempts):
            if self._port is None:
                self._port = free_port()
            try:
                self._spawn_and_wait(binary)
                with _live_lock:
                    _live_processes.add(self)
                return self
            except RuntimeError as exc:
                last_error = exc
                if attempts > 1:
                    self._port = None  # the picked port may have been stolen: pick another
        assert last_error is not None
        raise last_error

    def _spawn_and_wait(self, binary: str) -> None:
        data_dir = self.data_dir.resolve()
        # Absolute paths: redis-server chdirs into --dir while it reads its arguments.
        args = [
            binary,
            "--port", str(self._port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(data_dir),
            "--daemonize", "no",
            "--logfile", str(data_dir / "redis.log"),
            *self.extra_args,
        ]
        # Output before the log file is open (bad arguments) goes to stdout; a file, not a pipe,
        # so a chatty server can never block on a pipe nobody reads.
        stdout_path = data_dir / "redis.stdout"
        self._stdout_file = open(stdout_path, "ab")
        try:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=self._stdout_file,
                stderr=subprocess.STDOUT,
                cwd=str(data_dir),
                start_new_session=True,
                close_fds=True,
            )
        except OSError:
            self._close_stdout()
            raise
        deadline = time.monotonic() + _START_TIMEOUT_S
        last_exc: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._cleanup_after_exit()
                raise RuntimeError(
                    f"redis-server exited with code {code} while starting on port {self._port}\n"
                    f"{self._log_tail()}"
                )
            try:
                _ping(f"redis://127.0.0.1:{self._port}/0", timeout=0.5)
                return
            except redis.exceptions.RedisError as exc:
                last_exc = exc
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"redis-server did not answer PING on port {self._port} within {_START_TIMEOUT_S:.0f} s"
            f" ({last_exc})\n{self._log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server: SIGTERM, wait, then SIGKILL if it does not exit. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=_STOP_TIMEOUT_S)
            except ProcessLookupError:
                pass
        self._cleanup_after_exit()

    def kill(self) -> None:
        """Kill the server with SIGKILL (a crash, for tests), without waiting for a clean shutdown."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=_STOP_TIMEOUT_S)
        self._cleanup_after_exit()

    def restart(self) -> "RedisServerProcess":
        """Stop, then start again on the same port. The data is gone: persistence is off."""
        self.stop()
        return self.start()

    def _cleanup_after_exit(self) -> None:
        self._proc = None
        self._close_stdout()
        with _live_lock:
            _live_processes.discard(self)

    def _close_stdout(self) -> None:
        if self._stdout_file is not None:
            self._stdout_file.close()
            self._stdout_file = None

    def _log_tail(self, lines: int = 20) -> str:
        chunks = []
        for path in (self.data_dir / "redis.stdout", self.log_path):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            if text:
                chunks.append(f"--- {path} (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(chunks) or "(no server output)"

    def __enter__(self) -> "RedisServerProcess":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisServerProcess(port={self._port}, pid={self.pid}, data_dir={str(self._data_dir)!r})"


# --- embedded choice --------------------------------------------------------------------------


@dataclass
class EmbeddedRedis:
    """A Redis this process started for itself.

    ``mode`` is ``"redis-server"`` (a private subprocess) or ``"fakeredis"`` (the in-process demo
    fallback: memory only, slower, some commands missing). Call :meth:`stop` to shut it down;
    stopping twice is harmless.
    """

    url: str
    mode: str
    _stopper: Callable[[], None] | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Shut the server down."""
        stopper, self._stopper = self._stopper, None
        if stopper is not None:
            stopper()


def _start_fakeredis() -> EmbeddedRedis:
    # Imported here: fakeredis is the demo fallback and need not be loaded otherwise.
    import fakeredis

    # Bind port 0 directly (no free_port() race); TcpFakeServer sets SO_REUSEADDR itself.
    server = fakeredis.TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    # TcpFakeServer sets daemon_threads = False: one open client connection then keeps its handler
    # thread alive and the interpreter hangs at exit (measured). Daemon handler threads avoid that.
    server.daemon_threads = True
    server.block_on_close = False
    port = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever, name=f"fakeredis-{port}", daemon=True, kwargs={"poll_interval": 0.2}
    )
    thread.start()

    def stop() -> None:
        # shutdown() also sets the event that ends each connection's handler loop.
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    atexit.register(lambda: embedded.stop())
    embedded = EmbeddedRedis(url=f"redis://127.0.0.1:{port}/0", mode=MODE_FAKEREDIS, _stopper=stop)
    return embedded


def start_embedded(data_dir: str | os.PathLike[str]) -> EmbeddedRedis:
    """Start a private Redis for this process and return how to reach it.

    A ``redis-server`` subprocess on a free loopback port with its files under ``data_dir/redis``
    when the binary exists; otherwise ``fakeredis.TcpFakeServer`` served from a daemon thread.
    """
    if redis_server_binary() is not None:
        server_dir = Path(data_dir) / "redis"
        server_dir.mkdir(parents=True, exist_ok=True)
        proc = RedisServerProcess(data_dir=server_dir).start()
        return EmbeddedRedis(url=proc.url, mode=MODE_REDIS_SERVER, _stopper=proc.stop)
    return _start_fakeredis()


def resolve_redis_url(
    configured_url: str | None, data_dir: str | os.PathLike[str]
) -> tuple[str, str, EmbeddedRedis | None]:
    """Choose the Redis to use: ``(url, mode, embedded)``.

    With ``configured_url`` it must answer PING within about 1 s: mode ``"configured"``, no
    embedded server. A configured URL that does not answer raises :class:`RedisUnavailableError`
    (masked URL in the message) rather than silently falling back: an operator who configured a
    server expects its data, not an empty private one. Without ``configured_url`` an embedded
    server is started (mode ``"redis-server"`` or ``"fakeredis"``); the caller owns it and should
    ``stop()`` it.
    """
    if configured_url:
        try:
            _ping(configured_url, timeout=_CONFIGURED_PING_TIMEOUT_S)
        except (redis.exceptions.RedisError, OSError, ValueError) as exc:
            # redis-py's connection messages name host:port, never the password; the URL
            # itself is masked. Its ValueErrors quote the piece of the URL they could not
            # read, which may be the start of a password: only the class is named.
            reason = type(exc).__name__ if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            raise RedisUnavailableError(
                f"Redis at {mask_url(configured_url)} did not answer PING within "
                f"{_CONFIGURED_PING_TIMEOUT_S:g} s: {reason}. "
                "Start that server, fix REDIS_URL, or unset it to use an embedded Redis."
            ) from exc
        return configured_url, MODE_CONFIGURED, None
    embedded = start_embedded(data_dir)
    return embedded.url, embedded.mode, embedded
