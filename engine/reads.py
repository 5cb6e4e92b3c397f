"""The read side of a queue: records, pages, counts and stats.

``QueueReader`` holds every read of one namespace; ``TaskQueue`` (engine/queue.py) is one,
with the write verbs added, and the console reads through these methods. Reads never
write, never raise on a record's content (a record that does not parse comes back marked
``corrupt``), and each costs a fixed number of round trips however many tasks are stored.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import redis

from . import clock
from .batch_reads import batch_items
from .config import Settings
from .crypto import load_payload, open_result
from .errors import ValidationError, translate_redis_errors
from .events import parse_stream_entries
from .keys import PRIORITY_NAMES, STATUS_NAMES, Keys
from .models import QueueStats, TaskPriority, TaskStatus
from .pricing import TOKEN_FIELDS, task_usage
from .serialization import loads
from .validation import check_id, check_ids

# Why a task ended, or why it waits (see task_reason).
REASON_FIELDS = ("reason", "limited_by", "limited_until", "cancelled_by", "cancel_reason")

MERGED_PAGE_DEPTH = 10_000   # deepest row search_tasks pages to across several statuses
STATUS_FIELDS = ("status", "created_at", "started_at", "worker", "finished_at", "attempt",
                  "priority", "type", "error", "due_at", "max_retries", *TOKEN_FIELDS, "cost_nanos",
                  *REASON_FIELDS)

# What a running task reported (progress.lua): its progress belongs to the attempt whose
# token is `progress_fence`; an earlier attempt's is not shown.
PROGRESS_FIELDS = ("fence", "progress_fence", "progress", "progress_message")

# Every key of the public record, for a record that could not be read at all.
_RECORD_KEYS = ("status", "task_type", "priority", "created_at", "started_at", "finished_at",
                "worker_id", "error", "payload", "session_id", "due_at", "traceback",
                "duration", "parent_id")


class QueueReader:
    """Every read of one namespace. Subclasses (``TaskQueue``) set ``client``, ``keys``,
    ``settings`` and ``clock`` (a test clock, or None for Redis's)."""

    client: redis.Redis
    keys: Keys
    settings: Settings
    clock: Any = None

    # -- reading ------------------------------------------------------------------------
    def get_task(self, task_id: str) -> dict[str, Any] | None:
        """Everything stored about a task (payload parsed, times in ISO-8601), or None."""
        check_id(task_id)
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(self.keys.task(task_id))
            pipe.get(self.keys.result(task_id))
            pipe.get(self.keys.partial(task_id))
            fields, result, partial = pipe.execute(raise_on_error=False)
        if unreadable(fields):
            return corrupt_record(task_id)
        if isinstance(fields, Exception):
            raise fields
        if not fields:
            return None
        record = task_record(fields, task_id)
        add_progress(record, fields, partial)
        record["result"] = None
        if unreadable(result):
            mark_corrupt(record, "result")
            return record
        try:
            doc = open_result(loads(result))
        except (ValueError, RecursionError):
            mark_corrupt(record, "result")
            return record
        record["result"] = doc.get("result") if isinstance(doc, dict) else None
        return record

    def get_task_status(self, task_id: str) -> dict[str, Any] | None:
        """``{'task_id', 'status', 'created_at', 'started_at', 'worker_id', ...,
        'progress', 'progress_message', 'partial'}``, or None when there is no such task
        (never submitted, or expired). ``progress`` (0..1 or None), ``progress_message``
        and ``partial`` (the text streamed so far, '' when none) are what the task's
        current attempt reported; they stay after it ends, until the task expires."""
        check_id(task_id)
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(self.keys.task(task_id), STATUS_FIELDS + PROGRESS_FIELDS)
            pipe.get(self.keys.partial(task_id))
            values, partial = pipe.execute(raise_on_error=False)
        if unreadable(values):
            return corrupt_record(task_id)
        if isinstance(values, Exception):
            raise values
        if values[0] is None:
            return None
        fields = dict(zip(STATUS_FIELDS + PROGRESS_FIELDS, values))
        record = task_record(fields, task_id)
        add_progress(record, fields, partial)
        return record

    def get_task_progress(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        """``{'progress', 'progress_message', 'partial'}`` of each task (as
        :meth:`get_task_status` has them), in order, in one round trip."""
        ids = check_ids(list(task_ids))
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            for task_id in ids:
                pipe.hmget(self.keys.task(task_id), PROGRESS_FIELDS)
                pipe.get(self.keys.partial(task_id))
            replies = pipe.execute(raise_on_error=False) if ids else []
        out = []
        for values, partial in zip(replies[0::2], replies[1::2]):
            record: dict[str, Any] = {}
            fields = {} if isinstance(values, Exception) else dict(zip(PROGRESS_FIELDS, values))
            add_progress(record, fields, partial)
            out.append(record)
        return out

    def get_task_result(self, task_id: str) -> dict[str, Any] | None:
        """None until the task has finished; then ``{'status': 'completed' | 'failed' |
        'cancelled', 'result', 'error', 'duration', 'attempts', ...}``."""
        check_id(task_id)
        with translate_redis_errors():
            return self.result_document(task_id, self.client.get(self.keys.result(task_id)))

    def result_document(self, task_id: str, text: str | None) -> dict[str, Any] | None:
        """The stored result document; a batch's gets its children's answers, in order."""
        doc = open_result(loads(text))
        if isinstance(doc, dict) and doc.get("batch"):
            items = batch_items(self, task_id)
            doc["result"] = {"answers": [item["answer"] for item in items], "items": items}
        return doc

    def list_tasks(self, status: TaskStatus | str | None = None, limit: int = 50, offset: int = 0,
                   priority: Any = None, task_type: str | None = None,
                   session_id: str | None = None, scan_limit: int = 5000) -> list[dict[str, Any]]:
        """Tasks newest first (by when they entered their status), paged with
        ``limit``/``offset``. Without ``status`` the status indexes are merged. Filters on
        priority, type and session look at no more than ``scan_limit`` index entries, so a
        page costs a bounded number of Redis calls however many tasks are stored
        (:meth:`search_tasks` has the rest of the console's filters)."""
        return self.search_tasks(status=status, priority=priority, task_type=task_type,
                                 session_id=session_id, limit=limit, offset=offset,
                                 scan_limit=scan_limit)["tasks"]

    def load_records(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The records of ``ids`` in one round trip, in order. An id with no record (an
        index entry left behind) is skipped; a key that is not a hash comes back as a
        :func:`corrupt_record`, never as an error for the whole page."""
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            for task_id in ids:
                pipe.hgetall(self.keys.task(task_id))
            replies = pipe.execute(raise_on_error=False) if ids else []
        return [corrupt_record(task_id) if unreadable(fields) else task_record(fields, task_id)
                for task_id, fields in zip(ids, replies) if fields]

    def read_hashes(self, keys: Iterable[str]) -> list[dict[str, str]]:
        """HGETALL of each key, in order, in one round trip ({} for a missing key)."""
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            return pipe.execute()

    def count_tasks(self, status: TaskStatus | str) -> int:
        """How many ids the index of ``status`` holds."""
        with translate_redis_errors():
            return int(self.client.zcard(self.keys.status[status_name(status)]))

    def get_queue_stats(self) -> QueueStats:
        """A snapshot in one round trip: index sizes, lifetime counters, queue depths and
        active workers (those that heartbeated within the lease timeout)."""
        k = self.keys
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            for name in STATUS_NAMES:
                pipe.zcard(k.status[name])
            pipe.hgetall(k.stats)
            for name in PRIORITY_NAMES:
                pipe.llen(k.queue(name))
                pipe.hmget(k.group_counts(name), "tasks", "groups")
            pipe.llen(k.routed)
            pipe.zrange(k.workers, 0, -1, withscores=True)
            on_cluster = not hasattr(self.client, "connection_pool")
            if not on_cluster:      # the cluster client refuses TIME in a pipeline
                pipe.time()
            replies = iter(pipe.execute())      # read back in the order queued above
            sizes = {name: next(replies) for name in STATUS_NAMES}
            counters = {name: int(v) for name, v in next(replies).items()}
            depths = {name: queue_depth(next(replies), next(replies)) for name in PRIORITY_NAMES}
            routed, beats = next(replies), next(replies)
            server_time = server_ms(self.client) if on_cluster else _ms(*next(replies))
        now_ms = self.clock.now_ms() if self.clock else server_time
        horizon = now_ms - self.settings.lease_timeout * 1000
        active = sum(1 for _, beat in beats if beat >= horizon)
        return QueueStats(
            pending_tasks=sizes["pending"], scheduled_tasks=sizes["scheduled"],
            running_tasks=sizes["running"], retry_tasks=sizes["retry"],
            completed_tasks=counters.get("completed", 0), failed_tasks=counters.get("failed", 0),
            cancelled_tasks=counters.get("cancelled", 0),
            submitted_tasks=counters.get("submitted", 0), retried_tasks=counters.get("retried", 0),
            failed_in_index=sizes["failed"], active_workers=active, depth_by_priority=depths,
            routed_tasks=routed)


    def read_events(self, after: str | None = None, count: int = 200) -> list[dict[str, Any]]:
        """Stored events, oldest first: the newest ``count``, or those after stream id
        ``after`` (to catch up after a disconnect)."""
        with translate_redis_errors():
            if after:
                entries = self.client.xrange(self.keys.events_log, min="(" + after, count=count)
            else:
                entries = list(reversed(self.client.xrevrange(self.keys.events_log, count=count)))
        return parse_stream_entries(entries)


def task_record(fields: dict[str, str], task_id: str) -> dict[str, Any]:
    """A task hash as the public dict: ISO times, parsed payload, priority name.

    Never raises on a record's content: a field that cannot be read (bad JSON, a number
    that is not one, a time out of range, an unknown status or priority) is left at its
    empty value and named in ``record["corrupt"]``; the other fields are read as usual.
    A sound record has no ``corrupt`` key.
    """
    corrupt: list[str] = []

    def read(name: str, parse: Callable[[str], Any], empty: Any = None) -> Any:
        raw = fields.get(name)
        if raw is None or raw == "":
            return empty
        try:
            return parse(raw)
        except (TypeError, ValueError, OverflowError, OSError, RecursionError):
            corrupt.append(name)
            return empty

    status = fields.get("status")
    if status is not None and status not in STATUS_NAMES:
        corrupt.append("status")
    record: dict[str, Any] = {
        "task_id": task_id,
        "status": status,
        "task_type": fields.get("type"),
        "priority": read("priority", _priority_label),
        "created_at": read("created_at", clock.to_iso),
        "started_at": read("started_at", clock.to_iso),
        "finished_at": read("finished_at", clock.to_iso),
        "worker_id": fields.get("worker") or None,
        "attempts": read("attempt", int, 0),
        "error": fields.get("error") or None,
        "reason": task_reason(fields),
    }
    if fields.get("cancelled_by") or fields.get("cancel_reason"):
        record["cancelled_by"] = fields.get("cancelled_by") or None
        record["cancel_reason"] = fields.get("cancel_reason") or None
    if "payload" in fields:
        record.update({
            "payload": read("payload", load_payload, {}),
            "session_id": fields.get("session") or None,
            "max_retries": read("max_retries", int, 0),
            "due_at": read("due_at", clock.to_iso),
            "traceback": fields.get("traceback") or None,
            "duration": read("duration_ms", lambda v: int(v) / 1000),
            "stalls": read("stalls", int, 0),
            "parent_id": fields.get("parent") or None,
        })
    try:       # tokens and cost, when the task's model calls were counted (usage.lua)
        record.update(task_usage(fields) or {})
    except ValueError:
        corrupt.append("usage")
    if corrupt:
        record["corrupt"] = corrupt
    return record


def queue_depth(length: int, grouped: list) -> int:
    """Tasks waiting in one priority: its list's entries, less the group markers among
    them, plus the tasks in the groups' own lists (fair shares, engine/scripts/lib.lua)."""
    try:
        tasks, groups = (int(v or 0) for v in grouped)
    except (TypeError, ValueError):      # a damaged count: the list alone
        return length
    return max(0, length - groups + tasks)


def task_reason(fields: dict[str, Any]) -> str | None:
    """Why a task ended (completed, error, timeout, cancelled, stalled, corrupt, rate
    limited out, budget exhausted), or why a waiting task waits ("rate limited by <key>
    until <time>"); None for a task that is simply in line or running."""
    status = fields.get("status")
    if status in ("pending", "retry") and fields.get("limited_by"):
        until = fields.get("limited_until")
        try:
            when = clock.to_iso(int(until)) if until else None
        except (TypeError, ValueError, OverflowError, OSError):
            when = None
        return f"rate limited by {fields['limited_by']}" + (f" until {when}" if when else "")
    if status == "completed":
        return "completed"
    if status in ("failed", "cancelled"):
        return fields.get("reason") or ("cancelled" if status == "cancelled" else "error")
    return None


def add_progress(record: dict[str, Any], fields: dict[str, Any], partial: Any) -> None:
    """Set ``progress``, ``progress_message`` and ``partial`` in ``record`` from a task's
    fields and its streamed text: those of the current attempt only (a retry's new attempt
    shows none until it reports). A value that does not read is named in ``corrupt``."""
    current = bool(fields.get("progress_fence")) and fields.get("progress_fence") == fields.get("fence")
    record["progress"], record["progress_message"], record["partial"] = None, None, ""
    if not current:
        return
    try:
        fraction = float(fields.get("progress") or "nan")
    except ValueError:
        fraction = math.nan
        mark_corrupt(record, "progress")
    if 0 <= fraction <= 1:
        record["progress"] = fraction
    record["progress_message"] = fields.get("progress_message") or None
    if unreadable(partial) or (partial is not None and not isinstance(partial, str)):
        mark_corrupt(record, "partial")
    elif partial:
        record["partial"] = partial


def corrupt_record(task_id: str) -> dict[str, Any]:
    """The record of a task whose key holds something other than a hash: its id, every
    other field empty, and ``corrupt == ["record"]``."""
    record: dict[str, Any] = {"task_id": task_id, **dict.fromkeys(_RECORD_KEYS),
                              "attempts": 0, "max_retries": 0, "stalls": 0,
                              "progress": None, "progress_message": None, "partial": ""}
    record["corrupt"] = ["record"]
    return record


def mark_corrupt(record: dict[str, Any], name: str) -> None:
    if name not in record.setdefault("corrupt", []):
        record["corrupt"].append(name)


def unreadable(reply: Any) -> bool:
    """Whether a pipelined reply is Redis refusing to read a key of the wrong type."""
    return isinstance(reply, redis.ResponseError) and str(reply).startswith("WRONGTYPE")


def _priority_label(raw: str) -> str:
    return TaskPriority(int(raw)).label


def iso_or_none(ms: Any) -> str | None:
    """``clock.to_iso``, or None for a value that is no time (out of range, not a number)."""
    try:
        return clock.to_iso(ms)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def row_matches(task_id: str, values: Sequence[str | None], priority: int | None,
                 task_type: str | None, session_id: str | None, needle: str) -> bool:
    """Whether a task's (priority, type, session[, payload]) pass search_tasks' filters."""
    if priority is not None and values[0] != str(priority):
        return False
    if task_type and values[1] != str(task_type):
        return False
    if session_id and values[2] != session_id:
        return False
    return not needle or needle in task_id.lower() or needle in (values[3] or "").lower()


def status_name(status: TaskStatus | str) -> str:
    try:
        return TaskStatus(str(status).lower()).value
    except ValueError:
        raise ValidationError(f"unknown status {status!r}: use one of {', '.join(STATUS_NAMES)}") from None


def page_bounds(limit: int, offset: int) -> tuple[int, int]:
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise ValidationError("limit must be between 1 and 1000")
    if not isinstance(offset, int) or offset < 0:
        raise ValidationError("offset must be 0 or more")
    return limit, offset


def server_ms(client: redis.Redis) -> int:
    return _ms(*client.time())


def _ms(seconds: int, micros: int) -> int:
    """A TIME reply in epoch milliseconds."""
    return seconds * 1000 + micros // 1000
