"""Submitting a batch: a BATCH_QUERY task fans out into one AGENT_QUERY child per query.

The children run in parallel across workers. The parent waits in ``running``; the scripts
that end a child count it in the parent (``n_completed`` / ``n_failed`` /
``n_cancelled``) and the last child to end finishes the parent, atomically (lib.lua).
A batch is written whole or not at all (``submit_family``). This module registers itself
with the queue (engine/queue.py: register_fan_out), so ``submit_task`` of a batch task
comes here while the queue never imports it.
"""
from __future__ import annotations

from typing import Any, Sequence

from .batch_reads import child_ids
from .errors import IdempotencyConflict, QueueUnavailable, ValidationError, translate_redis_errors
from .models import Task, TaskType
from .queue import TaskQueue, register_fan_out
from .serialization import dumps, fingerprint, loads
from .store import accepted_ids
from .submission import submit_row

SUBMIT_CHUNK = 500      # children per script call (as TaskQueue.submit_tasks)
MAX_BATCH_SIZE = 100_000
_CHUNK = 1000


def is_batch(task: Task) -> bool:
    """Whether ``task`` is a batch to fan out (anything but a Task is left to the caller's
    validation, which names the bad input)."""
    return isinstance(task, Task) and task.type_name == TaskType.BATCH_QUERY.value


def batch_queries(payload: dict[str, Any]) -> list[str]:
    """The batch's queries, validated: a non-empty list of non-blank strings."""
    queries = payload.get("queries")
    if not isinstance(queries, list) or not queries:
        raise ValidationError("a batch needs payload['queries']: a non-empty list of queries")
    if len(queries) > MAX_BATCH_SIZE:
        raise ValidationError(f"a batch holds at most {MAX_BATCH_SIZE:,} queries, got {len(queries):,}")
    for index, query in enumerate(queries):
        if not isinstance(query, str) or not query.strip():
            raise ValidationError(f"query {index + 1} of the batch is blank or not text")
    return queries


def child_tasks(parent: Task, queries: Sequence[str]) -> list[Task]:
    """One AGENT_QUERY task per query, inheriting the parent's priority and retry policy
    (never a conversation flag: rows sharing a session id are not one conversation)."""
    extra = {k: v for k, v in parent.payload.items() if k not in ("queries", "conversation")}
    return [Task(task_type=TaskType.AGENT_QUERY, payload={**extra, "query": q, "index": i},
                 priority=parent.priority, max_retries=parent.max_retries,
                 retry_delay=parent.retry_delay, backoff=parent.backoff,
                 max_retry_delay=parent.max_retry_delay, session_id=parent.session_id,
                 run_at=parent.run_at, delay=parent.delay, timeout=parent.timeout,
                 parent_id=parent.task_id)
            for i, q in enumerate(queries)]


def submit_batch(queue: "TaskQueue", task: Task) -> str:
    """Submit a batch parent and its children; returns the parent's id.

    Everything is validated before anything is written. The parent goes first (so a
    resubmit with the same idempotency key is caught before any child is written), then
    the children in chunks, all in one pipeline round trip.
    """
    queries = batch_queries(task.payload)
    if "conversation" in task.payload:
        raise ValidationError("a batch's queries never join a conversation (each is a question "
                              "of its own): leave 'conversation' out of the batch's payload")
    parent_payload = {k: v for k, v in task.payload.items() if k != "queries"}
    parent_payload["count"] = len(queries)
    parent = Task(**{**task.__dict__, "payload": parent_payload})
    return submit_family(queue, parent, child_tasks(task, queries))


def submit_family(queue: "TaskQueue", parent: Task, children: Sequence[Task]) -> str:
    """Submit a batch parent and the children built for it (see :func:`submit_batch`).

    Written whole or not at all: the parent is written staged (in no index, no count, its
    idempotency key not taken), then the children in chunks, and one script call opens
    the batch. If anything fails on the way (Redis out of memory, a dropped connection),
    what was written is removed before the error is raised; if even that fails, the
    next submit of the same Task removes it first.
    """
    parent_row = submit_row(parent, queue.settings, queue.sealer, children=len(children))
    child_rows = [submit_row(child, queue.settings, queue.sealer, child=True) for child in children]
    content = ""
    if parent.idempotency_key:     # a batch is its children's work: the key covers them all
        content = fingerprint([parent.type_name, parent.payload, [c.payload for c in children]])
        parent_row[2] = dumps({**loads(parent_row[2]), "fp": content}, "task options")
    with translate_redis_errors():
        status = queue.client.hget(queue.keys.task(parent.task_id), "status")
        if status == "staging":
            remove_staged(queue, parent.task_id)    # an earlier submit of it failed half-way
        elif status is not None:
            return parent.task_id           # the same Task submitted again: already fanned out
        parent_id = accepted_ids(queue.store.submit([parent_row]), [parent])[0]
        if parent_id != parent.task_id:     # idempotent resubmit: the batch exists already
            return parent_id
        try:
            chunks = [child_rows[i:i + SUBMIT_CHUNK] for i in range(0, len(child_rows), SUBMIT_CHUNK)]
            queue.store.submit_streamed(chunks, len(chunks))
            code, other = queue.store.open_batch(parent_id, parent.idempotency_key, content)
        except BaseException:
            _remove_quietly(queue, parent_id)
            raise
    if int(code) == 1:
        return parent_id
    _remove_quietly(queue, parent_id)       # another submit with the same key got there first
    if int(code) == -5:
        raise IdempotencyConflict(f"idempotency key {parent.idempotency_key!r} was used for "
                                  f"batch {other} with other content", other)
    return other or parent_id


def remove_staged(queue: "TaskQueue", parent_id: str) -> None:
    """Delete a staged batch parent and every child written for it."""
    ids = child_ids(queue, parent_id)
    for start in range(0, len(ids), _CHUNK):
        queue.store.delete(ids[start:start + _CHUNK])
    queue.store.delete([parent_id])
    queue.client.delete(queue.keys.children(parent_id))


def _remove_quietly(queue: "TaskQueue", parent_id: str) -> None:
    """remove_staged while an error is on its way up: that error is the one to raise."""
    try:
        with translate_redis_errors():
            remove_staged(queue, parent_id)
    except QueueUnavailable:
        pass


register_fan_out(TaskType.BATCH_QUERY.value, submit_batch)
