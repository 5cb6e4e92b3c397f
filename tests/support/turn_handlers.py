"""A handler that notes when it starts and ends, for the conversation-order tests
(``worker.py --handlers tests.support.turn_handlers``)."""
from __future__ import annotations

import json
import time

from engine.models import RunningTask

LOG_SUFFIX = "test:turns"       # a list under the queue's namespace prefix


def turn(task: RunningTask) -> dict:
    """Log start and end (wall time) with the task's session and index, 0.15 s apart."""
    queue = task.worker.queue
    log = queue.keys.prefix + LOG_SUFFIX
    note = {"session": task.session_id, "i": task.payload["i"], "worker": task.worker.worker_id}
    queue.client.rpush(log, json.dumps({**note, "at": time.time(), "edge": "start"}))
    time.sleep(0.15)
    queue.client.rpush(log, json.dumps({**note, "at": time.time(), "edge": "end"}))
    return note


HANDLERS = {"turn": turn}
