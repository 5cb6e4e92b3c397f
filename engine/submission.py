"""What submit.lua is given for a task: its checked payload and its row of values.

Shared by every way of submitting (engine/queue.py, engine/batch_submit.py, the schedules'
checks in engine/scheduler.py), below all of them.
"""
from __future__ import annotations

from typing import Any

from .config import Settings
from .crypto import Sealer
from .errors import ValidationError
from .models import STORED_DEFAULTS, Task
from .serialization import dumps, fingerprint
from .validation import payload_json


def payload_text(task: Task, settings: Settings, child: bool = False) -> str:
    """Check the task whole (its fields again: they can change after it is built) and
    return its payload as JSON text, checked (engine.validation.payload_json). Only a
    batch's own children (``child``) may name a parent: a task that named any batch as
    its parent would be counted in it, and could end someone else's batch."""
    if not isinstance(task, Task):
        raise ValidationError(f"expected a Task, got {type(task).__name__}")
    task.validate()
    if task.parent_id is not None and not child:
        raise ValidationError("parent_id: a task joins a batch only as one of the batch's "
                              "own queries (submit the batch, or submit_csv)")
    return payload_json(task.payload, settings.max_payload_bytes)


def submit_row(task: Task, settings: Settings, sealer: Sealer | None = None, children: int = 0,
               payload: str | None = None, child: bool = False) -> list[Any]:
    """submit.lua's values for one task (``payload``: its JSON, when already checked;
    ``sealer``: the queue's encryption, engine/crypto.py; ``children``: a batch parent's
    count of children; ``child``: one of a batch's children)."""
    if payload is None:
        payload = payload_text(task, settings, child)
    if sealer is not None:
        payload = sealer.seal(payload)
    # Unset retry policy takes the settings' defaults (QUEUE_MAX_RETRIES, QUEUE_RETRY_DELAY).
    retries = settings.default_max_retries if task.max_retries is None else task.max_retries
    delay = settings.default_retry_delay if task.retry_delay is None else task.retry_delay
    extra: list[Any] = []
    for name, value in (("retry_delay", int(delay * 1000)), ("backoff", task.backoff.value),
                        ("max_retry_delay", int(task.max_retry_delay * 1000)),
                        ("session", task.session_id), ("timeout", task.timeout),
                        ("parent", task.parent_id), ("group", task.share_group),
                        ("serial", conversation_of(task))):
        if value is not None and value != "" and value != STORED_DEFAULTS.get(name):
            extra += [name, value]
    name = task.type_name
    return [task.task_id, int(task.priority), submit_options(task, children, name), name, payload,
            retries, len(extra) // 2, *extra]


def conversation_of(task: Task) -> str | None:
    """The session whose conversation the task joins (its payload says
    ``"conversation": true`` and it has a session): its tasks run one at a time, in
    submit order (claim.lua). None for every other task."""
    if task.session_id and task.payload.get("conversation") is True:
        return task.session_id
    return None


def submit_options(task: Task, children: int, name: str) -> str:
    """submit.lua's options for a task (``name``: its type's name): '' for a plain one
    (most), so that a plain submit sends and parses no more than it needs; else a small
    JSON object."""
    group = task.share_group
    if (task.run_at is None and task.delay is None and not task.idempotency_key
            and not group and not children):
        return ""
    options: dict[str, Any] = {}
    if task.run_at is not None:
        options["due"] = task.due_ms()
    if task.delay is not None:
        options["delay"] = int(task.delay * 1000)
    if task.idempotency_key:
        # The fingerprint covers what the task does (its type and payload), not how or when
        # it runs, which a retry of the same submit may change.
        options["idem"] = task.idempotency_key
        options["fp"] = fingerprint((name, task.payload))
    if task.parent_id:
        options["parent"] = task.parent_id
    if children:
        options["children"] = children
    elif group:
        options["group"] = group
    return dumps(options, "task options") if options else ""
