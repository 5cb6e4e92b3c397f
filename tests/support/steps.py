"""Small steps the tests take below the public API: claim as a named worker, read events."""
from __future__ import annotations

import json
import queue as queue_module
import time

from engine import TaskQueue
from engine.worker import CLAIM_FIELDS


def claim(queue: TaskQueue, worker_id: str = "worker-test0000", count: int = 1) -> list[tuple[str, str]]:
    """Claim up to ``count`` tasks straight through the store: [(task id, fencing token)]."""
    flat = queue.store.claim(worker_id, count)
    return [(flat[i], str(flat[i + 1])) for i in range(0, len(flat), CLAIM_FIELDS)]


def event_types(queue: TaskQueue, task_id: str | None = None) -> list[str]:
    """Types of the stored events (oldest first), of one task when ``task_id`` is given."""
    return [e["type"] for e in queue.read_events(count=10_000)
            if task_id is None or e["data"].get("task_id") == task_id]


class Collector:
    """A callback for ``subscribe_to_events`` that lets a test wait for events by type."""

    def __init__(self):
        self.messages: queue_module.Queue = queue_module.Queue()
        self.seen: list[dict] = []

    def __call__(self, message: dict) -> None:
        self.messages.put(message)

    def wait_for(self, wanted: list[tuple[str, str]], timeout: float = 5.0) -> list[dict]:
        """Collect until every (type, task id) in ``wanted`` arrived; returns all seen events."""
        deadline = time.monotonic() + timeout
        missing = list(wanted)
        while missing:
            left = deadline - time.monotonic()
            assert left > 0, f"events never arrived: {missing}; seen {[(e['type'], e['data'].get('task_id')) for e in self.seen]}"
            try:
                message = self.messages.get(timeout=left)
            except queue_module.Empty:
                continue
            assert isinstance(message["data"], str)
            event = json.loads(message["data"])
            assert set(event) == {"type", "data"}
            self.seen.append(event)
            key = (event["type"], event["data"].get("task_id"))
            if key in missing:
                missing.remove(key)
        return self.seen


def wait_until(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate`` every 5 ms until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.005)


def wait_for_waiter(queue: TaskQueue, task_id: str) -> None:
    """Wait until a ``wait_for_result`` call has registered itself on the task."""
    wait_until(lambda: queue.client.hget(queue.keys.task(task_id), "waiters") is not None,
               what="a waiter to register")
