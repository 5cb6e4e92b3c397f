"""``TaskQueue``: the public API for submitting, inspecting and steering tasks."""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, Sequence

import redis

from . import clock, metrics
from . import batch
from .config import Settings
from .connection import connect, connect_settings
from .crypto import load_payload, open_result, sealer_for
from .errors import (ConfigurationError, TaskNotFound, TaskTimeout, ValidationError,
                     raise_for_code, translate_redis_errors)
from .events import EventSubscription, parse_stream_entries
from .keys import PRIORITY_NAMES, STATUS_NAMES, Keys
from .models import STORED_DEFAULTS, QueueStats, Task, TaskPriority, TaskStatus, TERMINAL_STATUSES
from .serialization import dumps, fingerprint, loads
from .store import REAP_CHUNK, Store, accepted_ids
from .validation import check_id, check_ids, payload_json

SUBMIT_CHUNK = 500           # tasks per script call in bulk submits (500 measured best: finer overlap)
WAIT_SLICE_SECONDS = 2.0     # longest single blocking call (see DESIGN.md, known traps)
MERGED_PAGE_DEPTH = 10_000   # deepest row search_tasks pages to across several statuses
_STATUS_FIELDS = ("status", "created_at", "started_at", "worker", "finished_at", "attempt",
                  "priority", "type", "error", "due_at", "max_retries")


class TaskQueue:
    """A task queue in one Redis namespace.

    Build it with :func:`get_task_queue` (from the environment), :meth:`from_url`, or from
    a redis-py client. ``clock`` (tests only) replaces Redis ``TIME`` in every script.
    """

    def __init__(self, client: redis.Redis | None = None, *, settings: Settings | None = None,
                 namespace: str | None = None, clock: Any = None):
        self.settings = settings or Settings.from_env()
        self.client = client if client is not None else connect_settings(self.settings)
        self.keys = Keys(namespace or self.settings.namespace)
        self.clock = clock
        self.store = Store(self.client, self.keys, self.settings,
                           now_ms=clock.now_ms if clock is not None else None)
        self.sealer = sealer_for(self.settings)     # None unless QUEUE_ENCRYPTION_KEYS (engine/crypto.py)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "TaskQueue":
        """A queue on the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``)."""
        settings = kwargs.pop("settings", None) or Settings.from_env()
        return cls(connect(url, ssl_ca_certs=settings.redis_ssl_ca_certs,
                           cluster=settings.redis_cluster), settings=settings, **kwargs)

    @property
    def namespace(self) -> str:
        """The namespace every key of this queue lives under."""
        return self.keys.namespace

    # -- submitting ---------------------------------------------------------------------
    def _payload(self, task: Task) -> str:
        """Check the task whole (its fields again: they can change after it is built) and
        return its payload as JSON text, checked (engine.validation.payload_json)."""
        if not isinstance(task, Task):
            raise ValidationError(f"expected a Task, got {type(task).__name__}")
        task.validate()
        return payload_json(task.payload, self.settings.max_payload_bytes)

    def _row(self, task: Task, children: int = 0, payload: str | None = None) -> list[Any]:
        """submit.lua's values for one task (``payload``: its JSON, when already checked)."""
        if payload is None:
            payload = self._payload(task)
        if self.sealer is not None:
            payload = self.sealer.seal(payload)
        # Unset retry policy takes the settings' defaults (QUEUE_MAX_RETRIES, QUEUE_RETRY_DELAY).
        retries = self.settings.default_max_retries if task.max_retries is None else task.max_retries
        delay = self.settings.default_retry_delay if task.retry_delay is None else task.retry_delay
        extra: list[Any] = []
        for name, value in (("retry_delay", int(delay * 1000)), ("backoff", task.backoff.value),
                            ("max_retry_delay", int(task.max_retry_delay * 1000)),
                            ("session", task.session_id), ("timeout", task.timeout),
                            ("parent", task.parent_id)):
            if value is not None and value != "" and value != STORED_DEFAULTS.get(name):
                extra += [name, value]
        # What the idempotency fingerprint covers: what the task does (its type and payload),
        # not how or when it runs, which a retry of the same submit may change.
        options = _submit_options(task, children, (task.type_name, task.payload))
        return [task.task_id, int(task.priority), options, task.type_name, payload, retries,
                len(extra) // 2, *extra]

    def submit_task(self, task: Task) -> str:
        """Submit one task (one round trip); returns its id. Raises ValidationError (and
        writes nothing) for bad input."""
        if batch.is_batch(task):
            return batch.submit_batch(self, task)
        row = self._row(task)
        with translate_redis_errors():
            return accepted_ids(self.store.submit([row]), [task])[0]

    def submit_tasks(self, tasks: Iterable[Task]) -> list[str]:
        """Submit many tasks: every task is validated first (nothing is written if any is
        bad), then they stream to Redis in chunks of 500 per script call, in one
        pipelined round trip that overlaps encoding the next chunk with Redis running
        the last."""
        tasks = list(tasks)
        if any(batch.is_batch(t) for t in tasks):
            raise ValidationError("submit batches with submit_task, one at a time")
        payloads = [self._payload(t) for t in tasks]    # every check before any write
        if not tasks:
            return []
        # The rest of each row is built chunk by chunk while Redis runs the chunk before.
        chunks = ([self._row(t, payload=p) for t, p in zip(tasks[i:i + SUBMIT_CHUNK],
                                                           payloads[i:i + SUBMIT_CHUNK])]
                  for i in range(0, len(tasks), SUBMIT_CHUNK))
        count = -(-len(tasks) // SUBMIT_CHUNK)
        with translate_redis_errors():
            replies = self.store.submit_streamed(chunks, count)
        return accepted_ids([task_id for reply in replies for task_id in reply], tasks)

    # -- reading ------------------------------------------------------------------------
    def get_task(self, task_id: str) -> dict[str, Any] | None:
        """Everything stored about a task (payload parsed, times in ISO-8601), or None."""
        check_id(task_id)
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(self.keys.task(task_id))
            pipe.get(self.keys.result(task_id))
            fields, result = pipe.execute(raise_on_error=False)
        if _unreadable(fields):
            return corrupt_record(task_id)
        if isinstance(fields, Exception):
            raise fields
        if not fields:
            return None
        record = task_record(fields, task_id)
        record["result"] = None
        if _unreadable(result):
            _mark_corrupt(record, "result")
            return record
        try:
            doc = open_result(loads(result))
        except (ValueError, RecursionError):
            _mark_corrupt(record, "result")
            return record
        record["result"] = doc.get("result") if isinstance(doc, dict) else None
        return record

    def get_task_status(self, task_id: str) -> dict[str, Any] | None:
        """``{'task_id', 'status', 'created_at', 'started_at', 'worker_id', ...}``, or
        None when there is no such task (never submitted, or expired)."""
        check_id(task_id)
        try:
            with translate_redis_errors():
                values = self.client.hmget(self.keys.task(task_id), _STATUS_FIELDS)
        except redis.ResponseError as exc:
            if _unreadable(exc):
                return corrupt_record(task_id)
            raise
        if values[0] is None:
            return None
        return task_record(dict(zip(_STATUS_FIELDS, values)), task_id)

    def get_task_result(self, task_id: str) -> dict[str, Any] | None:
        """None until the task has finished; then ``{'status': 'completed' | 'failed' |
        'cancelled', 'result', 'error', 'duration', 'attempts', ...}``."""
        check_id(task_id)
        with translate_redis_errors():
            return self._result_document(task_id, self.client.get(self.keys.result(task_id)))

    def _result_document(self, task_id: str, text: str | None) -> dict[str, Any] | None:
        """The stored result document; a batch's gets its children's answers, in order."""
        doc = open_result(loads(text))
        if isinstance(doc, dict) and doc.get("batch"):
            items = batch.batch_items(self, task_id)
            doc["result"] = {"answers": [item["answer"] for item in items], "items": items}
        return doc

    def wait_for_result(self, task_id: str, timeout: float | None = 30.0) -> dict[str, Any]:
        """Block until the task finishes and return its result document.

        Woken by the finishing script itself (no polling interval); raises TaskTimeout
        after ``timeout`` seconds (None = wait forever) and TaskNotFound for an unknown id.
        """
        check_id(task_id)
        deadline = None if timeout is None else clock.monotonic() + timeout
        with translate_redis_errors():
            while True:
                left = WAIT_SLICE_SECONDS if deadline is None else deadline - clock.monotonic()
                # The read is BRPOPLPUSH onto the same list: it does not consume, so every
                # waiter on the task sees the document. (fakeredis's BLMOVE does not block.)
                status, doc = self.store.wait_and_read(task_id, max(0.01, min(left, WAIT_SLICE_SECONDS)))
                if not status:
                    raise TaskNotFound(f"task {task_id} not found")
                if doc:
                    return self._result_document(task_id, doc)
                if deadline is not None and clock.monotonic() >= deadline:
                    raise TaskTimeout(f"task {task_id} still {status} after {timeout} s")

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

    def _load_records(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The records of ``ids`` in one round trip, in order. An id with no record (an
        index entry left behind) is skipped; a key that is not a hash comes back as a
        :func:`corrupt_record`, never as an error for the whole page."""
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            for task_id in ids:
                pipe.hgetall(self.keys.task(task_id))
            replies = pipe.execute(raise_on_error=False) if ids else []
        return [corrupt_record(task_id) if _unreadable(fields) else task_record(fields, task_id)
                for task_id, fields in zip(ids, replies) if fields]

    def _read_hashes(self, keys: Iterable[str]) -> list[dict[str, str]]:
        """HGETALL of each key, in order, in one round trip ({} for a missing key)."""
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            return pipe.execute()

    def count_tasks(self, status: TaskStatus | str) -> int:
        """How many ids the index of ``status`` holds."""
        with translate_redis_errors():
            return int(self.client.zcard(self.keys.status[_status_name(status)]))

    def get_queue_stats(self) -> QueueStats:
        """A snapshot in one round trip: index sizes, lifetime counters, queue depths and
        active workers (those that heartbeated within the lease timeout)."""
        k = self.keys
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            for name in STATUS_NAMES:
                pipe.zcard(k.status[name])
            pipe.hgetall(k.stats)
            for q in k.queues:
                pipe.llen(q)
            pipe.llen(k.routed)
            pipe.zrange(k.workers, 0, -1, withscores=True)
            on_cluster = not hasattr(self.client, "connection_pool")
            if not on_cluster:      # the cluster client refuses TIME in a pipeline
                pipe.time()
            replies = iter(pipe.execute())      # read back in the order queued above
            sizes = {name: next(replies) for name in STATUS_NAMES}
            counters = {name: int(v) for name, v in next(replies).items()}
            depths = {name: next(replies) for name in PRIORITY_NAMES}
            routed, beats = next(replies), next(replies)
            server_time = _server_ms(self.client) if on_cluster else _ms(*next(replies))
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

    def list_workers(self) -> list[dict[str, Any]]:
        """Registered workers (active and recently lost or stopped), newest heartbeat first."""
        k = self.keys
        with translate_redis_errors():
            beats = self.client.zrevrange(k.workers, 0, 999, withscores=True)
            now_ms = self.clock.now_ms() if self.clock else _server_ms(self.client)
        details = self._read_hashes(k.worker(worker_id) for worker_id, _ in beats)
        horizon = now_ms - self.settings.lease_timeout * 1000
        out = []
        for (worker_id, beat), info in zip(beats, details):
            info = dict(info)
            info["worker_id"] = worker_id
            info["last_heartbeat"] = clock.to_iso(beat)
            if beat < horizon and info.get("state") != "stopped":
                info["state"] = "lost"
            out.append(info)
        return out

    def throughput(self, minutes: int = 60) -> list[dict[str, Any]]:
        """Per-minute submitted / completed / failed / retried counts and wait and run time
        p50/p95 (ms) for the last ``minutes`` minutes, oldest first; one round trip."""
        with translate_redis_errors():
            now_ms = self.clock.now_ms() if self.clock else _server_ms(self.client)
        last = now_ms // 60000
        span = range(last - minutes + 1, last + 1)
        replies = self._read_hashes(self.keys.minute_stats(minute) for minute in span)
        rows = []
        for minute, fields in zip(span, replies):
            wait, run = metrics.histogram(fields, "wait:"), metrics.histogram(fields, "run:")
            rows.append({"minute": clock.to_iso(minute * 60000),
                         **{n: int(fields.get(n, 0)) for n in ("submitted", "completed", "failed", "retried")},
                         "wait_p50_ms": metrics.percentile_ms(wait, 0.5),
                         "wait_p95_ms": metrics.percentile_ms(wait, 0.95),
                         "run_p50_ms": metrics.percentile_ms(run, 0.5),
                         "run_p95_ms": metrics.percentile_ms(run, 0.95)})
        return rows

    # -- console reads: each one a fixed number of round trips, however many tasks exist ----
    def search_tasks(self, *, status: Any = None, priority: Any = None,
                     task_type: str | None = None, session_id: str | None = None,
                     since_ms: int | None = None, until_ms: int | None = None,
                     text: str | None = None, limit: int = 50, offset: int = 0,
                     scan_limit: int = 5000) -> dict[str, Any]:
        """A page of tasks for a table, newest first by when they entered their status.

        ``status`` is one status, a list of them, or None for all. ``since_ms`` /
        ``until_ms`` (epoch ms) bound the time a task entered its status (its last
        change). ``priority``, ``task_type``, ``session_id`` and ``text`` (a
        case-insensitive substring of the id or of the payload JSON) are checked on at
        most ``scan_limit`` index entries, newest first. Without those filters, paging
        across several statuses reaches at most ``MERGED_PAGE_DEPTH`` rows deep (narrow
        to one status to go deeper).

        Returns ``{"tasks", "total", "exact", "scanned"}``: ``total`` counts every match
        when ``exact``, else only the matches among the ``scanned`` newest entries. Each
        task carries ``updated_at``. Two or three round trips.
        """
        limit, offset = _page_bounds(limit, offset)
        names = [_status_name(s) for s in (status if isinstance(status, (list, tuple, set))
                                           else [status])] if status else list(STATUS_NAMES)
        hi = "+inf" if until_ms is None else int(until_ms)
        lo = "-inf" if since_ms is None else int(since_ms)
        want_priority = int(TaskPriority.parse(priority)) if priority is not None else None
        needle = (text or "").strip().lower()
        filtered = want_priority is not None or bool(task_type) or bool(session_id) or bool(needle)
        if not filtered and len(names) > 1 and offset + limit > MERGED_PAGE_DEPTH:
            raise ValidationError(f"pages across statuses reach {MERGED_PAGE_DEPTH:,} rows deep: "
                                  "filter on one status to page further")
        # One status needs no merging, so Redis can skip to the offset itself.
        start, window = (offset, limit) if not filtered and len(names) == 1 else (
            0, scan_limit if filtered else offset + limit)
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.zrevrangebyscore(self.keys.status[name], hi, lo, start=start, num=window,
                                      withscores=True)
                pipe.zcount(self.keys.status[name], lo, hi)
            replies = pipe.execute()
        in_range = sum(int(n) for n in replies[1::2])
        pairs = sorted((p for reply in replies[0::2] for p in reply), key=lambda p: -p[1])[:window]
        scores = dict(pairs)
        ids = [task_id for task_id, _ in pairs]
        if not filtered:
            page = ids if len(names) == 1 else ids[offset:offset + limit]
            return {"tasks": self._with_updated(self._load_records(page), scores),
                    "total": in_range, "exact": True, "scanned": len(ids)}
        matches = self._matching(ids, want_priority, task_type, session_id, needle)
        records = self._load_records(matches[offset:offset + limit])
        return {"tasks": self._with_updated(records, scores), "total": len(matches),
                "exact": in_range <= len(ids), "scanned": len(ids)}

    def _matching(self, ids: Sequence[str], priority: int | None, task_type: str | None,
                  session_id: str | None, needle: str) -> list[str]:
        """The ids (order kept) whose task passes search_tasks' filters; one round trip.
        The payload is only read when there is text to look for."""
        fields = ("priority", "type", "session") + (("payload",) if needle else ())
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            for task_id in ids:
                pipe.hmget(self.keys.task(task_id), fields)
            values = pipe.execute(raise_on_error=False) if ids else []
        # A key that is not a hash has no fields to match: only its id can be found.
        return [task_id for task_id, v in zip(ids, values)
                if (_unreadable(v) and priority is None and not task_type and not session_id
                    and needle and needle in task_id.lower())
                or (not _unreadable(v) and v[0] is not None
                    and _row_matches(task_id, v, priority, task_type, session_id, needle))]

    @staticmethod
    def _with_updated(records: list[dict[str, Any]], scores: dict[str, float]) -> list[dict[str, Any]]:
        for record in records:
            record["updated_at"] = _iso_or_none(scores.get(record["task_id"]))
        return records

    def get_task_statuses(self, task_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """:meth:`get_task_status` for many ids in one round trip, in the same order
        (None for an id with no task)."""
        task_ids = check_ids(task_ids)
        if not task_ids:
            return []
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            for task_id in task_ids:
                pipe.hmget(self.keys.task(task_id), _STATUS_FIELDS)
            replies = pipe.execute(raise_on_error=False)
        return [corrupt_record(task_id) if _unreadable(values)
                else task_record(dict(zip(_STATUS_FIELDS, values)), task_id)
                if values[0] is not None else None for task_id, values in zip(task_ids, replies)]

    def list_scheduled(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Tasks waiting for a due time (scheduled ones, and retries waiting out their
        delay), soonest first, each with ``due_at`` from the ``scheduled`` set. Two round
        trips; the number waiting is ``scheduled_tasks + retry_tasks`` of the stats."""
        limit, offset = _page_bounds(limit, offset)
        with translate_redis_errors():
            pairs = self.client.zrange(self.keys.scheduled, offset, offset + limit - 1,
                                       withscores=True)
        due = dict(pairs)
        records = self._load_records([task_id for task_id, _ in pairs])
        for record in records:
            record["due_at"] = _iso_or_none(due.get(record["task_id"]))
            if record["due_at"] is None:
                _mark_corrupt(record, "due_at")
        return records

    def failed_task_groups(self, scan_limit: int = 2000) -> list[dict[str, Any]]:
        """Dead letters grouped by the first line of their error, largest group first:
        ``{"error", "count", "task_types", "first_failed_at", "last_failed_at",
        "task_ids"}`` (ids newest first). Looks at the newest ``scan_limit`` failed tasks;
        two round trips."""
        with translate_redis_errors():
            pairs = self.client.zrevrange(self.keys.status["failed"], 0, scan_limit - 1,
                                          withscores=True)
            pipe = self.client.pipeline(transaction=False)
            for task_id, _ in pairs:
                pipe.hmget(self.keys.task(task_id), ("status", "error", "type"))
            values = pipe.execute(raise_on_error=False) if pairs else []
        groups: dict[str, dict[str, Any]] = {}
        for (task_id, score), reply in zip(pairs, values):
            # A key that is not a hash: its own group, so it can be seen and deleted.
            status, error, task_type = (("failed", "corrupt record: not a task hash", None)
                                        if _unreadable(reply) else reply)
            if status != "failed":      # expired, or moved on since the index was read
                continue
            key = (error or "(no error recorded)").strip().splitlines()[0][:300]
            group = groups.setdefault(key, {"error": key, "count": 0, "task_types": set(),
                                            "first_ms": score, "last_ms": score, "task_ids": []})
            group["count"] += 1
            group["task_types"].add(task_type or "?")
            group["first_ms"] = min(group["first_ms"], score)
            group["last_ms"] = max(group["last_ms"], score)
            group["task_ids"].append(task_id)
        out = []
        for group in sorted(groups.values(), key=lambda g: (-g["count"], -g["last_ms"])):
            out.append({"error": group["error"], "count": group["count"],
                        "task_types": sorted(group["task_types"]),
                        "first_failed_at": _iso_or_none(group["first_ms"]),
                        "last_failed_at": _iso_or_none(group["last_ms"]),
                        "task_ids": group["task_ids"]})
        return out

    def get_workers(self, worker_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Stored details of the given workers, also of ones that already left the
        registry (lost or stopped: their record is kept for a day), shaped like
        :meth:`list_workers`; unknown ids are skipped. One round trip."""
        replies = self._read_hashes(self.keys.worker(worker_id) for worker_id in worker_ids)
        out = []
        for worker_id, info in zip(worker_ids, replies):
            if info:
                info = dict(info)
                info["worker_id"] = worker_id
                info["last_heartbeat"] = clock.to_iso(info.get("last_heartbeat"))
                out.append(info)
        return out

    # -- steering -----------------------------------------------------------------------
    def cancel_task(self, task_id: str, reason: str = "cancelled by request") -> str:
        """Cancel an unfinished task; returns the status it had. Raises TaskNotFound, or
        InvalidTransition for a finished task."""
        check_id(task_id)
        doc = dumps({"task_id": task_id, "status": "cancelled", "result": None,
                     "error": reason, "duration": None, "attempts": None})
        if self._is_batch_parent(task_id):
            batch.cancel_batch(self, task_id)
            return "running"
        with translate_redis_errors():
            code, previous = self.store.cancel(task_id, doc)
        raise_for_code(int(code), task_id, "cancel", previous)
        return previous

    def retry_task(self, task_id: str, priority: Any = None) -> str:
        """Run a failed or cancelled task again, with a fresh retry budget. For a batch:
        its failed and cancelled children."""
        check_id(task_id)
        if self._is_batch_parent(task_id):
            batch.retry_batch(self, task_id)
            return "running"
        return self._move(self.store.retry, task_id, priority, "retry")

    def _is_batch_parent(self, task_id: str) -> bool:
        with translate_redis_errors():
            try:
                return bool(self.client.hexists(self.keys.task(task_id), "total"))
            except redis.ResponseError:     # not a hash: the verb's script answers CorruptRecord
                return False

    def requeue_task(self, task_id: str, priority: Any = None) -> str:
        """Put an unfinished task back in line now (optionally at another priority)."""
        check_id(task_id)
        return self._move(self.store.requeue, task_id, priority, "requeue")

    def _move(self, verb: Callable, task_id: str, priority: Any, name: str) -> str:
        level = str(int(TaskPriority.parse(priority))) if priority is not None else ""
        with translate_redis_errors():
            code, previous = verb(task_id, level)
        raise_for_code(int(code), task_id, name, previous)
        return previous

    def delete_tasks(self, task_ids: Sequence[str]) -> int:
        """Delete tasks and every trace of them; returns how many existed."""
        task_ids = check_ids(task_ids)
        deleted = 0
        with translate_redis_errors():
            for i in range(0, len(task_ids), 500):
                deleted += self.store.delete(task_ids[i:i + 500])
        return deleted

    def delete_task(self, task_id: str) -> bool:
        """Delete one task; False when there was none."""
        check_id(task_id)
        return self.delete_tasks([task_id]) == 1

    def purge(self, status: TaskStatus | str) -> int:
        """Delete every task of a finished status (completed, failed or cancelled)."""
        name = _status_name(status)
        if TaskStatus(name) not in TERMINAL_STATUSES:
            raise ValidationError(f"purge takes a finished status (completed, failed, cancelled), not {name}")
        total = 0
        with translate_redis_errors():
            while True:
                ids = self.client.zrange(self.keys.status[name], 0, 499)
                if not ids:
                    return total
                total += self.store.delete(ids)

    def promote_due(self) -> int:
        """Move due scheduled and retry tasks to pending now; returns how many moved."""
        with translate_redis_errors():
            return self.store.promote()[0]

    def reap_expired_leases(self) -> tuple[int, int]:
        """Recover every task whose worker stopped heartbeating: (requeued, failed).

        In chunks (one script call each, so Redis is never held long), until no expired
        lease is left: after a mass crash the whole backlog comes back in one pass."""
        requeued = failed = 0
        with translate_redis_errors():
            while True:
                back, dead, _, handled = self.store.reap(int(self.settings.lease_timeout * 1000))
                requeued, failed = requeued + back, failed + dead
                if handled < REAP_CHUNK:
                    return requeued, failed

    # -- events -------------------------------------------------------------------------
    def subscribe_to_events(self, callback: Callable[[dict], Any]) -> EventSubscription:
        """Call ``callback(message)`` for every live event until ``.stop()``."""
        return EventSubscription(self.client, self.keys.events, callback)

    def read_events(self, after: str | None = None, count: int = 200) -> list[dict[str, Any]]:
        """Stored events, oldest first: the newest ``count``, or those after stream id
        ``after`` (to catch up after a disconnect)."""
        with translate_redis_errors():
            if after:
                entries = self.client.xrange(self.keys.events_log, min="(" + after, count=count)
            else:
                entries = list(reversed(self.client.xrevrange(self.keys.events_log, count=count)))
        return parse_stream_entries(entries)

    def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(self.client.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False


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
    }
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
    if corrupt:
        record["corrupt"] = corrupt
    return record


# Every key of the public record, for a record that could not be read at all.
_RECORD_KEYS = ("status", "task_type", "priority", "created_at", "started_at", "finished_at",
                "worker_id", "error", "payload", "session_id", "due_at", "traceback",
                "duration", "parent_id")


def corrupt_record(task_id: str) -> dict[str, Any]:
    """The record of a task whose key holds something other than a hash: its id, every
    other field empty, and ``corrupt == ["record"]``."""
    record: dict[str, Any] = {"task_id": task_id, **dict.fromkeys(_RECORD_KEYS),
                              "attempts": 0, "max_retries": 0, "stalls": 0}
    record["corrupt"] = ["record"]
    return record


def _mark_corrupt(record: dict[str, Any], name: str) -> None:
    if name not in record.setdefault("corrupt", []):
        record["corrupt"].append(name)


def _unreadable(reply: Any) -> bool:
    """Whether a pipelined reply is Redis refusing to read a key of the wrong type."""
    return isinstance(reply, redis.ResponseError) and str(reply).startswith("WRONGTYPE")


def _priority_label(raw: str) -> str:
    return TaskPriority(int(raw)).label


def _iso_or_none(ms: Any) -> str | None:
    """``clock.to_iso``, or None for a value that is no time (out of range, not a number)."""
    try:
        return clock.to_iso(ms)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _row_matches(task_id: str, values: Sequence[str | None], priority: int | None,
                 task_type: str | None, session_id: str | None, needle: str) -> bool:
    """Whether a task's (priority, type, session[, payload]) pass search_tasks' filters."""
    if priority is not None and values[0] != str(priority):
        return False
    if task_type and values[1] != str(task_type):
        return False
    if session_id and values[2] != session_id:
        return False
    return not needle or needle in task_id.lower() or needle in (values[3] or "").lower()


def _submit_options(task: Task, children: int, content: Sequence[Any]) -> str:
    """submit.lua's options for a task: '' for a plain one (most), so that a plain submit
    sends and parses no more than it needs; else a small JSON object. ``content`` is what
    the idempotency fingerprint covers."""
    options: dict[str, Any] = {}
    if task.run_at is not None:
        options["due"] = task.due_ms()
    if task.delay is not None:
        options["delay"] = int(task.delay * 1000)
    if task.idempotency_key:
        options["idem"] = task.idempotency_key
        options["fp"] = fingerprint(content)
    if task.parent_id:
        options["parent"] = task.parent_id
    if children:
        options["children"] = children
    return dumps(options, "task options") if options else ""


def _status_name(status: TaskStatus | str) -> str:
    try:
        return TaskStatus(str(status).lower()).value
    except ValueError:
        raise ValidationError(f"unknown status {status!r}: use one of {', '.join(STATUS_NAMES)}") from None


def _page_bounds(limit: int, offset: int) -> tuple[int, int]:
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise ValidationError("limit must be between 1 and 1000")
    if not isinstance(offset, int) or offset < 0:
        raise ValidationError("offset must be 0 or more")
    return limit, offset


def _server_ms(client: redis.Redis) -> int:
    return _ms(*client.time())


def _ms(seconds: int, micros: int) -> int:
    """A TIME reply in epoch milliseconds."""
    return seconds * 1000 + micros // 1000


_default_queue: TaskQueue | None = None
_default_lock = threading.Lock()


def get_task_queue(settings: Settings | None = None) -> TaskQueue:
    """The process-wide queue, built once from the environment (and ``.env``)."""
    global _default_queue
    with _default_lock:
        if _default_queue is None:
            settings = settings or Settings.from_env()
            if not settings.use_redis_queue:
                raise ConfigurationError("the Redis queue is switched off (USE_REDIS_QUEUE=false)")
            _default_queue = TaskQueue(settings=settings)
        return _default_queue


def reset_task_queue() -> None:
    """Forget the process-wide queue (tests, or after changing the environment)."""
    global _default_queue
    with _default_lock:
        _default_queue = None
