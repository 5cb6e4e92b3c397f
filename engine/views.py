"""The console's views of a queue: searches, pages of the dead letters and the scheduled,
workers and throughput. Read-only, each a fixed number of round trips however many tasks
are stored; ``TaskQueue`` inherits them, and the console calls them through it.
"""
from __future__ import annotations

from typing import Any, Sequence

from . import clock, metrics
from .errors import ValidationError, translate_redis_errors
from .keys import STATUS_NAMES
from .models import TaskPriority
from .reads import (STATUS_FIELDS, MERGED_PAGE_DEPTH, QueueReader, corrupt_record, iso_or_none,
                    mark_corrupt, page_bounds, row_matches, server_ms, status_name, task_record,
                    unreadable)
from .validation import check_ids


class QueueViews(QueueReader):
    """What the console's pages read, beside :class:`QueueReader`'s reads."""

    def list_workers(self) -> list[dict[str, Any]]:
        """Registered workers (active and recently lost or stopped), newest heartbeat first."""
        k = self.keys
        with translate_redis_errors():
            beats = self.client.zrevrange(k.workers, 0, 999, withscores=True)
            now_ms = self.clock.now_ms() if self.clock else server_ms(self.client)
        details = self.read_hashes(k.worker(worker_id) for worker_id, _ in beats)
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
            now_ms = self.clock.now_ms() if self.clock else server_ms(self.client)
        last = now_ms // 60000
        span = range(last - minutes + 1, last + 1)
        replies = self.read_hashes(self.keys.minute_stats(minute) for minute in span)
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
        limit, offset = page_bounds(limit, offset)
        names = [status_name(s) for s in (status if isinstance(status, (list, tuple, set))
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
            return {"tasks": self._with_updated(self.load_records(page), scores),
                    "total": in_range, "exact": True, "scanned": len(ids)}
        matches = self.matching_ids(ids, want_priority, task_type, session_id, needle)
        records = self.load_records(matches[offset:offset + limit])
        return {"tasks": self._with_updated(records, scores), "total": len(matches),
                "exact": in_range <= len(ids), "scanned": len(ids)}

    def matching_ids(self, ids: Sequence[str], priority: int | None, task_type: str | None,
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
                if (unreadable(v) and priority is None and not task_type and not session_id
                    and needle and needle in task_id.lower())
                or (not unreadable(v) and v[0] is not None
                    and row_matches(task_id, v, priority, task_type, session_id, needle))]

    @staticmethod
    def _with_updated(records: list[dict[str, Any]], scores: dict[str, float]) -> list[dict[str, Any]]:
        for record in records:
            record["updated_at"] = iso_or_none(scores.get(record["task_id"]))
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
                pipe.hmget(self.keys.task(task_id), STATUS_FIELDS)
            replies = pipe.execute(raise_on_error=False)
        return [corrupt_record(task_id) if unreadable(values)
                else task_record(dict(zip(STATUS_FIELDS, values)), task_id)
                if values[0] is not None else None for task_id, values in zip(task_ids, replies)]

    def list_scheduled(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Tasks waiting for a due time (scheduled ones, and retries waiting out their
        delay), soonest first, each with ``due_at`` from the ``scheduled`` set. Two round
        trips; the number waiting is ``scheduled_tasks + retry_tasks`` of the stats."""
        limit, offset = page_bounds(limit, offset)
        with translate_redis_errors():
            pairs = self.client.zrange(self.keys.scheduled, offset, offset + limit - 1,
                                       withscores=True)
        due = dict(pairs)
        records = self.load_records([task_id for task_id, _ in pairs])
        for record in records:
            record["due_at"] = iso_or_none(due.get(record["task_id"]))
            if record["due_at"] is None:
                mark_corrupt(record, "due_at")
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
                                        if unreadable(reply) else reply)
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
                        "first_failed_at": iso_or_none(group["first_ms"]),
                        "last_failed_at": iso_or_none(group["last_ms"]),
                        "task_ids": group["task_ids"]})
        return out

    def get_workers(self, worker_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Stored details of the given workers, also of ones that already left the
        registry (lost or stopped: their record is kept for a day), shaped like
        :meth:`list_workers`; unknown ids are skipped. One round trip."""
        replies = self.read_hashes(self.keys.worker(worker_id) for worker_id in worker_ids)
        out = []
        for worker_id, info in zip(worker_ids, replies):
            if info:
                info = dict(info)
                info["worker_id"] = worker_id
                info["last_heartbeat"] = clock.to_iso(info.get("last_heartbeat"))
                out.append(info)
        return out
