"""Handlers for worker processes started by the tests (``--handlers tests.support.handlers``)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from engine.models import RunningTask


def sleep(task: RunningTask) -> dict:
    """Sleep ``payload["seconds"]``, then say which process ran it. With ``started_file``,
    create that file first, so a test knows the handler (not just the claim) has begun."""
    if task.payload.get("started_file"):
        Path(task.payload["started_file"]).touch()
    time.sleep(float(task.payload.get("seconds", 0)))
    return {"slept": task.payload.get("seconds", 0), "pid": os.getpid()}


def echo(task: RunningTask) -> dict:
    """Return the payload."""
    return {"echo": task.payload, "pid": os.getpid()}


def chaos(task: RunningTask) -> dict:
    """Work for ``payload["ms"]`` ms; with ``payload["flaky"]``, fail the first attempt
    (the retry path runs under the chaos too)."""
    if task.payload.get("flaky") and task.attempt == 1:
        raise RuntimeError("first attempts of flaky tasks fail")
    time.sleep(task.payload.get("ms", 0) / 1000)
    return {"pid": os.getpid(), "attempt": task.attempt}


def register(worker) -> None:
    """Entry point ``worker.py --handlers`` calls."""
    worker.register_handler("sleep", sleep)
    worker.register_handler("echo", echo)
    worker.register_handler("chaos", chaos)
