"""Handlers the benchmark's worker processes run: ``--handlers bench.handlers``."""
from __future__ import annotations

import time


def noop(task):
    """Does nothing: measures the queue, not the work."""
    return None


def sleep(task):
    """Sleeps ``payload['seconds']``: stands in for an LLM call's wait."""
    time.sleep(float(task.payload.get("seconds", 1.0)))
    return {"slept": task.payload.get("seconds", 1.0)}


HANDLERS = {"noop": noop, "sleep": sleep}
