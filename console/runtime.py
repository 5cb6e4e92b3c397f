"""The console's connection to the queue, cached once per server process.

``REDIS_URL`` and ``QUEUE_NAMESPACE`` (read through ``Settings.from_env``) choose the
queue; the ``TaskQueue`` is cached per (url, namespace) with ``st.cache_resource``. With
no Redis configured, one embedded Redis and one in-process worker are started for the
whole server process.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from engine import Settings, TaskQueue
from engine.config import mask_url
from engine.connection import connect
from engine.embedded import EmbeddedRedis, resolve_redis_url

from .connection import Connection, EmbeddedWorker, configured_redis_url


@dataclass(frozen=True)
class ConsoleContext:
    """What every page receives from the frame."""

    settings: Settings
    queue: TaskQueue
    connection: Connection
    worker: EmbeddedWorker | None = None

    @property
    def display_url(self) -> str:
        """The Redis URL with any password masked: the only form ever shown."""
        return mask_url(self.connection.url)

    @property
    def refresh_seconds(self) -> float:
        """How often live parts refresh."""
        return self.settings.console_refresh_seconds


def load_settings() -> Settings:
    """Settings from the environment and ``.env`` (raises ConfigurationError)."""
    return Settings.from_env()


@st.cache_resource(show_spinner=False)
def _queue_for(url: str, namespace: str, _settings: Settings) -> TaskQueue:
    # The ping inside resolve_redis_url raises when the server does not answer, and
    # cache_resource does not cache exceptions: the next run simply tries again.
    resolve_redis_url(url, _settings.data_dir)
    client = connect(url, ssl_ca_certs=_settings.redis_ssl_ca_certs,
                     cluster=_settings.redis_cluster)
    return TaskQueue(client, settings=_settings, namespace=namespace)


def _stop_embedded_redis(value: tuple[str, str, EmbeddedRedis | None]) -> None:
    if value[2] is not None:
        value[2].stop()


@st.cache_resource(show_spinner="Starting an embedded Redis…", on_release=_stop_embedded_redis)
def _embedded_redis(data_dir: str) -> tuple[str, str, EmbeddedRedis | None]:
    return resolve_redis_url(None, data_dir)


# validate: a worker thread that died (it logs why) is replaced on the next page run.
@st.cache_resource(show_spinner=False, validate=lambda worker: worker.alive,
                   on_release=lambda worker: worker.stop(5.0))
def _embedded_worker(url: str, namespace: str, _settings: Settings) -> EmbeddedWorker:
    # Its own client and queue object: the worker's blocking waits never hold up a page.
    queue = TaskQueue(connect(url), settings=_settings, namespace=namespace)
    return EmbeddedWorker(queue, _settings).start()


def connect_console(settings: Settings | None = None) -> ConsoleContext:
    """The queue the console works on, connecting (or starting the embedded Redis and
    worker) on first use. Raises RedisUnavailableError when a configured Redis does not
    answer: falling back to an empty private one would hide the operator's data."""
    settings = settings or load_settings()
    url = configured_redis_url(settings)
    worker = None
    if url:
        connection = Connection(url, "configured")
    else:
        embedded_url, mode, _server = _embedded_redis(str(settings.data_dir))
        connection = Connection(embedded_url, mode)
        worker = _embedded_worker(embedded_url, settings.namespace, settings)
    queue = _queue_for(connection.url, settings.namespace, settings)
    return ConsoleContext(settings=settings, queue=queue, connection=connection, worker=worker)


def default_queue() -> TaskQueue:
    """The queue a widget uses when it is given none: the console's cached one."""
    return connect_console().queue


def stop_embedded() -> None:
    """Stop the cached embedded worker and server and forget them (tests; a server
    process also stops them at exit). The worker goes first: it reports to the server."""
    _embedded_worker.clear()
    _embedded_redis.clear()
