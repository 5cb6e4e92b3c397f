"""Reads and drawings that every session looking at the same thing shares: one per tick.

Each open page refreshes its live parts every ``CONSOLE_REFRESH_SECONDS``; without sharing,
ten operators on the Overview make ten identical reads a tick, and the server's CPU grows
with every idle page. :func:`shared_read` keeps what a read returned for one refresh
interval (``st.cache_data``, keyed by the queue, the read and its arguments), so sessions
whose ticks fall in the same interval share it. An action taken from this console starts
a new generation for its queue: the next read of every session is fresh, so the operator
who acted sees the engine's answer at once.

Reading once is not enough: building what is drawn (pandas frames, Plotly figures, the
JSON of a live panel) cost more than the reads. :func:`shared_object` keeps a built
value for one refresh interval and hands every session the same object; the live
panels (console/live_panel.py) are built through it, once a tick for every page that
shows them, and one build at a time per entry.

``ENABLED = False`` turns sharing off in this process: tests that change Redis between two
runs of a page, and expect the second run to show it, set it.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import streamlit as st

from engine import TaskQueue

from .data import QueueCounts, load_counts

MAX_ENTRIES = 512              # distinct reads kept (pages × filters × queues)
ENABLED = True
_lock = threading.Lock()
_generations: dict[str, int] = {}
_cached: dict[float, Any] = {}  # refresh interval -> its st.cache_data function


def _scope(queue: TaskQueue) -> str:
    """Which queue: its namespace on its Redis connection (one per server process)."""
    return f"{queue.namespace}@{id(queue.client)}"


def queue_changed(queue: TaskQueue) -> None:
    """Forget every shared read of ``queue`` (call after an action changed it)."""
    scope = _scope(queue)
    with _lock:
        _generations[scope] = _generations.get(scope, 0) + 1


def _cache_for(seconds: float) -> Any:
    """The shared cache whose entries live ``seconds`` (one per refresh interval in use:
    a Streamlit cache has one lifetime, and its key includes the function's name)."""
    with _lock:
        cache = _cached.get(seconds)
        if cache is None:
            def read_once(scope: str, what: str, key: str, generation: int,
                          _read: Callable[[], Any]) -> Any:
                return _read()
            read_once.__qualname__ = f"shared_read_every_{seconds:g}s"
            cache = _cached[seconds] = st.cache_data(ttl=seconds, max_entries=MAX_ENTRIES,
                                                     show_spinner=False)(read_once)
        return cache


def shared_read(queue: TaskQueue, what: str, read: Callable[[], Any], *key: Any,
                seconds: float | None = None) -> Any:
    """``read()``, or what it returned less than one refresh interval ago for the same
    ``queue``, ``what`` and ``key`` (``key`` must name everything the read depends on).
    ``seconds`` defaults to the queue's ``console_refresh_seconds``; 0 reads every time."""
    seconds = queue.settings.console_refresh_seconds if seconds is None else seconds
    cache = _cache_for(seconds) if ENABLED and seconds and seconds > 0 else None
    if cache is None:
        return read()
    scope = _scope(queue)
    return cache(scope, what, repr(key), _generations.get(scope, 0), _read=read)


# -- objects drawn by every session: built once per tick, never copied ---------------------------
_objects: dict[tuple, tuple[float, Any]] = {}
_building: dict[tuple, threading.Lock] = {}
MAX_OBJECTS = 64


def shared_object(queue: TaskQueue, what: str, build: Callable[[], Any], *key: Any,
                  seconds: float | None = None) -> Any:
    """Like :func:`shared_read`, for what is costly to *draw* as well as to read (the
    Overview's Plotly figures take longer to build than their Redis reads): ``build()``'s
    value is kept in this process for one refresh interval and handed to every session
    as the same object, without the copy ``st.cache_data`` makes. Callers must treat it
    as read-only."""
    seconds = queue.settings.console_refresh_seconds if seconds is None else seconds
    if not ENABLED or not seconds or seconds <= 0:
        return build()
    scope = _scope(queue)
    entry = (scope, what, repr(key), _generations.get(scope, 0))
    held = _held(entry)
    if held is not None:
        return held[1]
    # One build per entry at a time: the sessions whose ticks fall together wait for the
    # first one's value instead of each reading Redis (the global lock is not held, so a
    # slow read does not stall other entries).
    with _building_lock(entry):
        held = _held(entry)
        if held is not None:
            return held[1]
        value = build()
        _keep(entry, value, seconds)
    return value


def held_object(queue: TaskQueue, what: str, *key: Any, seconds: float | None = None) -> Any:
    """What :func:`shared_object` would hand out now without building, or None when it
    would build (nothing kept, or kept too long). It never blocks on a build: a request
    handler on the event loop can answer from it and leave building to a thread."""
    seconds = queue.settings.console_refresh_seconds if seconds is None else seconds
    if not ENABLED or not seconds or seconds <= 0:
        return None
    scope = _scope(queue)
    held = _held((scope, what, repr(key), _generations.get(scope, 0)))
    return None if held is None else held[1]


def _held(entry: tuple) -> tuple[float, Any] | None:
    with _lock:
        held = _objects.get(entry)
    return held if held is not None and held[0] > time.monotonic() else None


def _building_lock(entry: tuple) -> threading.Lock:
    with _lock:
        if len(_building) > 4 * MAX_OBJECTS:
            _building.clear()       # locks of old generations; one held now stays referenced
        return _building.setdefault(entry, threading.Lock())


def _keep(entry: tuple, value: Any, seconds: float) -> None:
    now = time.monotonic()
    with _lock:
        if len(_objects) >= MAX_OBJECTS:
            expired = [k for k, (expires, _) in _objects.items() if expires <= now]
            for stale in expired or list(_objects)[:len(_objects) // 2]:
                _objects.pop(stale, None)
        _objects[entry] = (now + seconds, value)


def shared_counts(queue: TaskQueue) -> QueueCounts:
    """The queue's counts (``console.data.load_counts``), read once per tick for every
    page and session: the sidebar's summary, the Overview and the tables' headers all
    show them."""
    return shared_object(queue, "counts", lambda: load_counts(queue))
