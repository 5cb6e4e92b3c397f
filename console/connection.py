"""Which Redis the console talks to, and the embedded mode's in-process worker.

No Streamlit here: ``console.runtime`` caches these with ``st.cache_resource`` so there
is one of each per server process.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from engine import Settings, TaskQueue, TaskWorker
from engine.agent import register_handlers
from engine.config import read_env_file
from engine.embedded import MODE_CONFIGURED, MODE_FAKEREDIS, MODE_REDIS_SERVER

log = logging.getLogger("console.connection")

EMBEDDED_CONCURRENCY = 4
EMBEDDED_WORKER_NAME = "console-embedded"


def configured_redis_url(settings: Settings, environ: Mapping[str, str] | None = None) -> str | None:
    """The Redis the operator configured: ``REDIS_URL``, or one built from
    ``REDIS_HOST`` (and port, db, password) when that is set. None when neither is set:
    the console then runs on an embedded Redis instead of guessing at localhost:6379,
    which may be someone else's server."""
    if settings.redis_url:
        return settings.redis_url
    env = environ if environ is not None else environment()
    return settings.connection_url() if env.get("REDIS_HOST") else None


def environment(env_file: str | os.PathLike = ".env") -> dict[str, str]:
    """The variables ``Settings.from_env`` reads: ``.env`` overlaid by the process."""
    values = read_env_file(env_file) if Path(env_file).is_file() else {}
    values.update(os.environ)
    return values


def describe_mode(mode: str) -> str:
    """A plain sentence naming the Redis the console is on."""
    return {
        MODE_CONFIGURED: "Connected to the configured Redis.",
        MODE_REDIS_SERVER: ("This console started a private redis-server on a loopback "
                            "port, persistence off."),
        MODE_FAKEREDIS: ("This console runs an in-process fakeredis (redis-server is not "
                         "installed): a demo only, in memory and much slower."),
    }.get(mode, mode)


class EmbeddedWorker:
    """A :class:`TaskWorker` with the agent handlers, running in a daemon thread of the
    console's process (embedded mode only: with a real Redis, operators run
    ``python worker.py`` wherever they like)."""

    def __init__(self, queue: TaskQueue, settings: Settings,
                 concurrency: int = EMBEDDED_CONCURRENCY):
        self.worker = TaskWorker(queue, concurrency=concurrency, name=EMBEDDED_WORKER_NAME)
        register_handlers(self.worker, settings)
        self.thread: threading.Thread | None = None

    @property
    def worker_id(self) -> str:
        """The worker's id, as the Workers page lists it."""
        return self.worker.worker_id

    def start(self) -> "EmbeddedWorker":
        """Start the worker thread (once)."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="console-embedded-worker",
                                           daemon=True)
            self.thread.start()
            # Stop cleanly at exit, before the embedded server (registered earlier) goes.
            atexit.register(self.stop, 5.0)
        return self

    def _run(self) -> None:
        try:
            self.worker.start()
        except Exception:   # a crashed worker thread must say why in the server log
            log.exception("embedded worker stopped with an error")

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running."""
        return self.thread is not None and self.thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming, finish what is in hand, and wait up to ``timeout`` seconds."""
        self.worker.stop()
        if self.thread is not None:
            self.thread.join(timeout)


@dataclass(frozen=True)
class Connection:
    """Where the console is connected: the URL to use and how it was chosen."""

    url: str
    mode: str

    @property
    def embedded(self) -> bool:
        """Whether this console started the Redis itself."""
        return self.mode != MODE_CONFIGURED
