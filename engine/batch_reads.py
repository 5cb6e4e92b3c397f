"""What a batch holds, read: its children, their outcomes and the batch's progress.

Read-only, below the queue (engine/reads.py builds a batch's result document from these)
and below engine/batch_submit.py, which writes batches. Each function costs a fixed number
of round trips per chunk of children, and never raises on a record's content.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .crypto import load_payload, open_result
from .errors import TaskNotFound, translate_redis_errors
from .pricing import TOKEN_FIELDS, task_usage
from .serialization import loads

if TYPE_CHECKING:   # for annotations only: the readers are the queue's objects
    from .reads import QueueReader

_CHUNK = 1000       # children read per round trip
_CHILD_FIELDS = ("status", "payload", "error", *TOKEN_FIELDS, "cost_nanos")


def child_ids(queue: "QueueReader", batch_id: str) -> list[str]:
    """The batch's children, in input order."""
    with translate_redis_errors():
        return queue.client.lrange(queue.keys.children(batch_id), 0, -1)


def batch_progress(queue: "QueueReader", batch_id: str) -> dict[str, Any]:
    """``{'status', 'total', 'completed', 'failed', 'cancelled', 'done'}`` of a batch."""
    fields = ("status", "total", "n_completed", "n_failed", "n_cancelled")
    with translate_redis_errors():
        values = queue.client.hmget(queue.keys.task(batch_id), fields)
    if values[0] is None or values[1] is None:
        raise TaskNotFound(f"batch {batch_id} not found")
    total, completed, failed, cancelled = (int(v or 0) for v in values[1:])
    return {"batch_id": batch_id, "status": values[0], "total": total, "completed": completed,
            "failed": failed, "cancelled": cancelled, "done": completed + failed + cancelled}


def batch_items(queue: "QueueReader", batch_id: str) -> list[dict[str, Any]]:
    """Every child's outcome, in input order: index, task_id, query, status, answer,
    result, error, duration, tokens, cost."""
    return [child_item(*record) for record in child_records(queue, batch_id)]


def child_records(queue: "QueueReader", batch_id: str) -> Iterator[tuple]:
    """(index, task_id, status, payload, error, result document, metering) of every child,
    in input order, read a chunk per round trip; metering is ``task_usage``'s (engine/pricing.py)."""
    ids = child_ids(queue, batch_id)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        with translate_redis_errors():
            pipe = queue.client.pipeline(transaction=False)
            for task_id in chunk:
                pipe.hmget(queue.keys.task(task_id), _CHILD_FIELDS)
                pipe.get(queue.keys.result(task_id))
            replies = pipe.execute()
        for offset, task_id in enumerate(chunk):
            fields, doc = replies[2 * offset], open_result(loads(replies[2 * offset + 1]))
            status, payload, error = fields[:3]
            yield (start + offset, task_id, status, load_payload(payload, {}), error, doc,
                   _metering(dict(zip(_CHILD_FIELDS, fields))))


def _metering(fields: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return task_usage(fields)
    except ValueError:      # a count that does not parse: shown as not metered
        return None


def child_item(index: int, task_id: str, status: str | None, payload: dict, error: str | None,
               doc: dict | None, metering: dict[str, Any] | None = None) -> dict[str, Any]:
    """One child's outcome as batch results show it; ``tokens`` and ``cost`` (dollars) are
    None when its model calls were not counted (or had no price)."""
    result = doc.get("result") if isinstance(doc, dict) else None
    return {"index": index, "task_id": task_id, "query": payload.get("query"),
            "status": (doc or {}).get("status") or status or "expired",
            "answer": result.get("answer") if isinstance(result, dict) else result,
            "result": result, "error": (doc or {}).get("error") or error or None,
            "duration": (doc or {}).get("duration"),
            "tokens": metering["usage"]["total_tokens"] if metering else None,
            "cost": metering["cost"] if metering else None}


# -- reads for the console's batch view (each a fixed number of round trips) -------------------
BATCH_FIELDS = ("status", "total", "n_completed", "n_failed", "n_cancelled", "created_at",
                "finished_at", "payload", "priority")


def batch_summaries(queue: "QueueReader", batch_ids: Sequence[str]) -> list[dict[str, Any] | None]:
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


def count_children(queue: "QueueReader", batch_id: str) -> int:
    """How many children the batch has."""
    with translate_redis_errors():
        return int(queue.client.llen(queue.keys.children(batch_id)))


def child_window(queue: "QueueReader", batch_id: str, start: int = 0,
                 count: int = 5000) -> list[str]:
    """``count`` of the batch's child ids from ``start``, in input order (one round trip)."""
    if count <= 0:
        return []
    with translate_redis_errors():
        return queue.client.lrange(queue.keys.children(batch_id), start, start + count - 1)


def child_statuses(queue: "QueueReader", ids: Sequence[str]) -> list[str | None]:
    """The status of each child id, in order (None: gone, or not a task hash)."""
    if not ids:
        return []
    with translate_redis_errors():
        pipe = queue.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hget(queue.keys.task(task_id), "status")
        replies = pipe.execute(raise_on_error=False)
    return [None if isinstance(r, Exception) else r for r in replies]


def count_batches(queue: "QueueReader", statuses: Sequence[str],
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
