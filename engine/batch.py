"""Batches: a BATCH_QUERY task fans out into one AGENT_QUERY child per query.

The children run in parallel across workers. The parent waits in ``running``; the scripts
that end a child count it in the parent (``n_completed`` / ``n_failed`` /
``n_cancelled``) and the last child to end finishes the parent, atomically (lib.lua).
The parent's result lists every child's answer in input order, read from the children.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .crypto import load_payload, open_result
from .errors import (IdempotencyConflict, InvalidTransition, QueueUnavailable, TaskNotFound,
                     ValidationError, translate_redis_errors)
from .models import Task, TaskType
from .serialization import dumps, fingerprint, loads
from .store import accepted_ids

SUBMIT_CHUNK = 500      # children per script call (as TaskQueue.submit_tasks)

if TYPE_CHECKING:  # the queue imports this module; avoid the cycle at run time
    from .queue import TaskQueue

MAX_BATCH_SIZE = 100_000
_CHUNK = 1000
_UNFINISHED = ("pending", "scheduled", "retry", "running")


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
    """One AGENT_QUERY task per query, inheriting the parent's priority and retry policy."""
    extra = {k: v for k, v in parent.payload.items() if k not in ("queries",)}
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
    parent_row = queue._row(parent, children=len(children))
    child_rows = [queue._row(child) for child in children]
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


def child_ids(queue: "TaskQueue", batch_id: str) -> list[str]:
    """The batch's children, in input order."""
    with translate_redis_errors():
        return queue.client.lrange(queue.keys.children(batch_id), 0, -1)


def batch_progress(queue: "TaskQueue", batch_id: str) -> dict[str, Any]:
    """``{'status', 'total', 'completed', 'failed', 'cancelled', 'done'}`` of a batch."""
    fields = ("status", "total", "n_completed", "n_failed", "n_cancelled")
    with translate_redis_errors():
        values = queue.client.hmget(queue.keys.task(batch_id), fields)
    if values[0] is None or values[1] is None:
        raise TaskNotFound(f"batch {batch_id} not found")
    total, completed, failed, cancelled = (int(v or 0) for v in values[1:])
    return {"batch_id": batch_id, "status": values[0], "total": total, "completed": completed,
            "failed": failed, "cancelled": cancelled, "done": completed + failed + cancelled}


def batch_items(queue: "TaskQueue", batch_id: str) -> list[dict[str, Any]]:
    """Every child's outcome, in input order: index, task_id, query, status, answer,
    result, error, duration."""
    return [_item(index, task_id, status, payload, error, doc)
            for index, task_id, status, payload, error, doc in child_records(queue, batch_id)]


def child_records(queue: "TaskQueue", batch_id: str) -> Iterator[tuple]:
    """(index, task_id, status, payload, error, result document) of every child, in input
    order, read a chunk per round trip."""
    ids = child_ids(queue, batch_id)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        with translate_redis_errors():
            pipe = queue.client.pipeline(transaction=False)
            for task_id in chunk:
                pipe.hmget(queue.keys.task(task_id), ("status", "payload", "error"))
                pipe.get(queue.keys.result(task_id))
            replies = pipe.execute()
        for offset, task_id in enumerate(chunk):
            (status, payload, error), doc = replies[2 * offset], open_result(loads(replies[2 * offset + 1]))
            yield start + offset, task_id, status, load_payload(payload, {}), error, doc


def _item(index: int, task_id: str, status: str | None, payload: dict, error: str | None,
          doc: dict | None) -> dict[str, Any]:
    result = doc.get("result") if isinstance(doc, dict) else None
    return {"index": index, "task_id": task_id, "query": payload.get("query"),
            "status": (doc or {}).get("status") or status or "expired",
            "answer": result.get("answer") if isinstance(result, dict) else result,
            "result": result, "error": (doc or {}).get("error") or error or None,
            "duration": (doc or {}).get("duration")}


def cancel_batch(queue: "TaskQueue", batch_id: str) -> int:
    """Cancel the batch's unfinished children (the last one ends the batch as cancelled);
    returns how many were cancelled."""
    return _act_on_children(queue, batch_id, _UNFINISHED, "cancel")


def retry_batch(queue: "TaskQueue", batch_id: str) -> int:
    """Run the batch's failed and cancelled children again; returns how many."""
    return _act_on_children(queue, batch_id, ("failed", "cancelled"), "retry")


def _act_on_children(queue: "TaskQueue", batch_id: str, statuses: Sequence[str], verb: str) -> int:
    ids = child_ids(queue, batch_id)
    with translate_redis_errors():
        pipe = queue.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hget(queue.keys.task(task_id), "status")
        targets = [i for i, status in zip(ids, pipe.execute()) if status in statuses]
        doc = '{"status":"cancelled","result":null,"error":"batch cancelled"}'
        for start in range(0, len(targets), _CHUNK):
            pipe = queue.store.script_pipeline()
            for task_id in targets[start:start + _CHUNK]:
                if verb == "cancel":
                    queue.store.cancel(task_id, doc, client=pipe)
                else:
                    queue.store.retry(task_id, client=pipe)
            pipe.execute()
    if not targets:
        raise InvalidTransition(f"cannot {verb} batch {batch_id}: no child is "
                                f"{' or '.join(statuses)}")
    return len(targets)


# -- CSV jobs (implemented in engine.csv_jobs) -----------------------------------------------
def submit_csv(file: Any, query_column: str = "query", priority: Any = "low",
               queue: "TaskQueue | None" = None, **task_options: Any) -> str:
    """Submit every data row of a CSV file (a path, bytes, or an open file) as one query of
    a new batch; returns the batch id. Each row's task keeps the input row, for
    :func:`export_results_csv`. A rejected file (too large, too many rows, not UTF-8, no
    such column, blank queries) raises ValidationError naming the rows, and writes nothing.
    Limits: ``QUEUE_CSV_MAX_BYTES``, ``QUEUE_CSV_MAX_ROWS``."""
    from .csv_jobs import submit_csv as submit
    return submit(file, query_column=query_column, priority=priority, queue=queue, **task_options)


def export_results_csv(batch_id: str, queue: "TaskQueue | None" = None,
                       path_or_buffer: Any = None) -> str | None:
    """The batch's input rows with ``answer``, ``status``, ``error`` and ``duration`` added,
    in input order: returned as text, or written to ``path_or_buffer`` (a path or an open
    file; then None is returned)."""
    from .csv_jobs import export_results_csv as export
    return export(batch_id, queue=queue, path_or_buffer=path_or_buffer)


# -- reads for the console's batch view (each a fixed number of round trips) -------------------
BATCH_FIELDS = ("status", "total", "n_completed", "n_failed", "n_cancelled", "created_at",
                "finished_at", "payload", "priority")


def batch_summaries(queue: "TaskQueue", batch_ids: Sequence[str]) -> list[dict[str, Any] | None]:
    """:func:`batch_progress` of many batches in one round trip, in order, each with
    ``created_at`` / ``finished_at`` (epoch ms or None), ``source`` (where its queries came
    from, when known) and ``priority``; None for an id that is no batch. Never raises on a
    record's content: a field that does not read is 0 or None."""
    if not batch_ids:
        return []
    with translate_redis_errors():
        pipe = queue.client.pipeline(transaction=False)
        for batch_id in batch_ids:
            pipe.hmget(queue.keys.task(batch_id), BATCH_FIELDS)
        replies = pipe.execute(raise_on_error=False)
    return [_summary(batch_id, reply) for batch_id, reply in zip(batch_ids, replies)]


def _summary(batch_id: str, reply: Any) -> dict[str, Any] | None:
    if isinstance(reply, Exception) or reply[0] is None or reply[1] is None:
        return None
    status, total, completed, failed, cancelled, created, finished, payload, priority = reply
    total, completed, failed, cancelled, created, finished = (
        _number(v) for v in (total, completed, failed, cancelled, created, finished))
    try:
        source = (load_payload(payload, {}) or {}).get("source")
    except (ValueError, AttributeError, RecursionError):
        source = None
    return {"batch_id": batch_id, "status": status, "total": total or 0,
            "completed": completed or 0, "failed": failed or 0, "cancelled": cancelled or 0,
            "done": (completed or 0) + (failed or 0) + (cancelled or 0),
            "created_at": created, "finished_at": finished, "source": source,
            "priority": priority}


def _number(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None


def count_children(queue: "TaskQueue", batch_id: str) -> int:
    """How many children the batch has."""
    with translate_redis_errors():
        return int(queue.client.llen(queue.keys.children(batch_id)))


def child_window(queue: "TaskQueue", batch_id: str, start: int = 0,
                 count: int = 5000) -> list[str]:
    """``count`` of the batch's child ids from ``start``, in input order (one round trip)."""
    if count <= 0:
        return []
    with translate_redis_errors():
        return queue.client.lrange(queue.keys.children(batch_id), start, start + count - 1)


def child_statuses(queue: "TaskQueue", ids: Sequence[str]) -> list[str | None]:
    """The status of each child id, in order (None: gone, or not a task hash)."""
    if not ids:
        return []
    with translate_redis_errors():
        pipe = queue.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hget(queue.keys.task(task_id), "status")
        replies = pipe.execute(raise_on_error=False)
    return [None if isinstance(r, Exception) else r for r in replies]


def count_batches(queue: "TaskQueue", statuses: Sequence[str],
                  window: int = 1000) -> dict[str, tuple[int, bool]]:
    """How many batch parents each status index holds among its newest ``window`` ids:
    ``{status: (count, exact)}``, exact when the index holds no more than ``window``.
    Two round trips. (The lifetime counters count a batch's children, never the batch;
    the status indexes hold both, so a count of tasks subtracts these.)"""
    if not statuses:
        return {}
    with translate_redis_errors():
        pipe = queue.client.pipeline(transaction=False)
        for status in statuses:
            pipe.zrevrange(queue.keys.status[status], 0, window)   # window + 1: is there more?
        windows = pipe.execute()
        pipe = queue.client.pipeline(transaction=False)
        for ids in windows:
            for task_id in ids[:window]:
                pipe.hexists(queue.keys.task(task_id), "total")
        flags = iter(pipe.execute(raise_on_error=False) if any(windows) else [])
    out = {}
    for status, ids in zip(statuses, windows):
        count = sum(1 for _ in ids[:window] if next(flags) is True)
        out[status] = (count, len(ids) <= window)
    return out
