"""A second handler set, for a worker process that runs a type the others do not
(``--handlers tests.support.more_handlers``)."""
from __future__ import annotations

import os

from engine.models import RunningTask


def shout(task: RunningTask) -> dict:
    """Upper-case ``payload["text"]``, and say which process did it."""
    return {"text": task.payload["text"].upper(), "pid": os.getpid()}


def register(worker) -> None:
    """Entry point ``worker.py --handlers`` calls."""
    worker.register_handler("shout", shout)
