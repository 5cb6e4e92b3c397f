"""Handlers that run long, for the timeout and cancel tests
(``worker.py --handlers tests.support.long_handlers``).

Each writes ``payload["started_file"]`` when it begins, so a test knows the handler (not
just the claim) has started, and reports what it saw in ``payload["seen_file"]``.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

from engine.models import RunningTask

NEVER = threading.Event()       # never set: a handler waiting on it never returns


def _started(task: RunningTask) -> None:
    if task.payload.get("started_file"):
        Path(task.payload["started_file"]).write_text(str(task.attempt))


def hang(task: RunningTask) -> None:
    """A plain handler that never returns."""
    _started(task)
    NEVER.wait()


async def async_hang(task: RunningTask) -> None:
    """An ``async def`` handler that never returns; it notes being cancelled."""
    _started(task)
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        Path(task.payload["seen_file"]).write_text("cancelled")
        raise


def until_cancelled(task: RunningTask) -> dict:
    """A plain handler that works until ``task.context.cancelled`` turns true (at most a
    minute), then notes how long that took to reach it."""
    _started(task)
    began = time.monotonic()
    while not task.context.cancelled and time.monotonic() - began < 60:
        time.sleep(0.01)
    Path(task.payload["seen_file"]).write_text(f"{time.monotonic() - began:.3f}")
    return {"pid": os.getpid()}


def register(worker) -> None:
    """Entry point ``worker.py --handlers`` calls."""
    worker.register_handler("hang", hang)
    worker.register_handler("hang_half_second", hang, timeout=0.5)
    worker.register_handler("until_cancelled", until_cancelled)
    if os.environ.get("TEST_ASYNC_HANDLERS"):
        worker.register_handler("async_hang", async_hang)
