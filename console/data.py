"""What each page shows, read from the queue and shaped into tables. No Streamlit here.

Every ``load_*`` function costs a fixed number of Redis round trips, however many tasks
are stored: the pages call them on every live refresh, and the tests count the calls.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd

from engine import QueueStats, TaskQueue, TaskPriority, ValidationError, clock
from engine import batch as engine_batch
from engine.reads import MERGED_PAGE_DEPTH

from .theme import status_label, worker_state_label

TIME_RANGES: dict[str, float | None] = {
    "Any time": None, "Last 15 minutes": 15 * 60, "Last hour": 3600,
    "Last 24 hours": 86400, "Last 7 days": 7 * 86400,
}
PAGE_SIZES = (25, 50, 100, 200)
SEARCH_SCAN = 5000          # index entries a filtered or text search looks at
EVENTS_SCAN = 1000          # stored events read to build timelines and lost-worker stories
QUERY_PREVIEW_CHARS = 120


# -- small formatting helpers ----------------------------------------------------------------
def to_timestamp(iso: str | None) -> pd.Timestamp | None:
    """An engine ISO time as a UTC pandas Timestamp (None stays None, and so does a time
    pandas cannot hold, such as a due time centuries ahead: one odd record must not take
    the table)."""
    if not iso:
        return None
    try:
        return pd.Timestamp(iso).tz_convert("UTC")
    except (TypeError, ValueError, OverflowError):     # OutOfBoundsDatetime is a ValueError
        return None


def iso_ms(iso: str | None) -> int | None:
    """An engine ISO time as epoch ms (None when there is none, or it is out of range)."""
    stamp = to_timestamp(iso)
    return int(stamp.value // 1_000_000) if stamp is not None else None


def record_status(record: dict[str, Any]) -> str | None:
    """A record's status for display: ``"corrupt"`` when the engine could not read some
    of its fields (``record["corrupt"]``), else its status."""
    return "corrupt" if record.get("corrupt") else record.get("status")


def corrupt_note(record: dict[str, Any]) -> str:
    """``"corrupt: payload, priority"`` for a corrupt record, else ``""``."""
    fields = record.get("corrupt") or []
    return f"corrupt: {', '.join(map(str, fields))}" if fields else ""


def attempts_text(record: dict[str, Any], joiner: str = " / ") -> str:
    """Attempts made and allowed, ``"1 / 4"`` (a field that could not be read counts 0)."""
    made = record.get("attempts") or 0
    allowed = (record.get("max_retries") or 0) + 1
    return f"{made}{joiner}{allowed}"


def describe_age(seconds: float | None) -> str:
    """``"12 s"``, ``"4 min"``, ``"3 h"``, ``"2 d"`` (``"—"`` when unknown)."""
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            digits = 0 if seconds >= 10 * size else 1
            return f"{seconds / size:.{digits}f} {unit}"
    return f"{seconds:.0f} s"


def format_rate(rate: float) -> str:
    """A success rate as a short percentage: ``"100%"``, ``"75%"``, ``"66.7%"``. Whole
    percentages drop the decimal (it keeps the sidebar's narrow cells from cutting the
    number off); a rate just under 1 never rounds up to ``"100%"``, nor one just over 0
    down to ``"0%"``."""
    tenths = min(max(round(rate * 1000), 1 if rate > 0 else 0), 999 if rate < 1 else 1000)
    return f"{tenths // 10}%" if tenths % 10 == 0 else f"{tenths / 10:.1f}%"


def query_preview(payload: Any, limit: int = QUERY_PREVIEW_CHARS) -> str:
    """The query text of a payload, shortened for a table cell."""
    if not isinstance(payload, dict):
        return ""
    text = payload.get("query")
    if text is None and "count" in payload:
        text = f"batch of {payload['count']} queries"
    if text is None:
        text = json.dumps(payload, ensure_ascii=False) if payload else ""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


# -- overview --------------------------------------------------------------------------------
BATCH_STATUSES = ("running", "completed", "failed", "cancelled")   # where batch parents wait
BATCH_COUNT_WINDOW = 500      # newest ids of an index looked at to count its batches


@dataclass
class QueueCounts:
    """Tasks and batches counted apart. The engine's lifetime counters (completed,
    failed...) count tasks only (a batch's children, never the batch); its status indexes
    hold batch parents too (a batch waits in ``running`` while its children run), so
    every count of tasks read from an index subtracts the batches in it."""

    stats: QueueStats
    batches: dict[str, tuple[int, bool]]      # status -> (batch parents, exact)

    def batches_in(self, status: str) -> int:
        """Batch parents in the index of ``status`` (0 for statuses they never take)."""
        return self.batches.get(status, (0, True))[0]

    def batches_exact(self, status: str | None = None) -> bool:
        """Whether the batch count of ``status`` (None: every status) is exact."""
        names = [status] if status else list(self.batches)
        return all(self.batches.get(n, (0, True))[1] for n in names)

    @property
    def running_tasks(self) -> int:
        """Tasks held by a worker (the running index without batch parents)."""
        return max(0, self.stats.running_tasks - self.batches_in("running"))

    @property
    def dead_letter_tasks(self) -> int:
        """Failed tasks stored (the failed index without failed batches)."""
        return max(0, self.stats.failed_in_index - self.batches_in("failed"))

    def index_split(self, status: str | None, total: int) -> tuple[int, int]:
        """``(tasks, batches)`` among ``total`` index entries of ``status`` (None: all)."""
        batches = (self.batches_in(status) if status
                   else sum(self.batches_in(name) for name in BATCH_STATUSES))
        return max(0, total - batches), batches


def load_counts(queue: TaskQueue) -> QueueCounts:
    """Stats and batch parents per status: three round trips."""
    return QueueCounts(queue.get_queue_stats(),
                       engine_batch.count_batches(queue, BATCH_STATUSES, BATCH_COUNT_WINDOW))


@dataclass
class OverviewSnapshot:
    """The Overview page's live numbers: counts, the last hour per minute, recent failures."""

    counts: QueueCounts
    throughput: list[dict[str, Any]]
    failures: list[dict[str, Any]]

    @property
    def stats(self) -> QueueStats:
        """The engine's snapshot of index sizes and counters."""
        return self.counts.stats


def load_overview(queue: TaskQueue, minutes: int = 60, failures: int = 8,
                  counts: QueueCounts | None = None) -> OverviewSnapshot:
    """Seven round trips: counts (3, none when ``counts`` is given), per-minute rows (2),
    newest failures (2)."""
    return OverviewSnapshot(
        counts=counts if counts is not None else load_counts(queue),
        throughput=queue.throughput(minutes),
        failures=queue.search_tasks(status="failed", limit=failures)["tasks"])


def count_text(value: int, exact: bool = True) -> str:
    """``"1,234"``, or ``"≥1,234"`` for a count that looked at a bounded window."""
    return f"{value:,}" if exact else f"≥{value:,}"


def summary_numbers(counts: QueueCounts | QueueStats) -> dict[str, str]:
    """The compact summary's numbers, formatted: tasks (pending, running, completed and
    failed over the queue's life), then running batches, workers and the success rate."""
    if isinstance(counts, QueueStats):
        counts = QueueCounts(counts, {})
    stats = counts.stats
    done = stats.completed_tasks + stats.failed_tasks
    return {
        "Pending": f"{stats.pending_tasks:,}", "Running": f"{counts.running_tasks:,}",
        "Completed": f"{stats.completed_tasks:,}", "Failed": f"{stats.failed_tasks:,}",
        "Workers": f"{stats.active_workers:,}",
        "Success rate": format_rate(stats.success_rate) if done else "—",
        "Batches running": count_text(counts.batches_in("running"),
                                      counts.batches_exact("running")),
    }


def failures_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Recent failures: when, task id, type, error."""
    return pd.DataFrame([{
        "Failed at (UTC)": to_timestamp(r.get("finished_at") or r.get("updated_at")),
        "Task id": r["task_id"], "Type": r.get("task_type"),
        "Error": corrupt_note(r) or first_line(r.get("error")),
        "Attempts": r.get("attempts"),
    } for r in records], columns=["Failed at (UTC)", "Task id", "Type", "Error", "Attempts"])


# -- tasks -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskFilters:
    """The Tasks page's filters; ``None``/``""`` means "any"."""

    status: str | None = None
    priority: str | None = None
    task_type: str | None = None
    session_id: str | None = None
    time_range: str = "Any time"
    search: str = ""
    batch: str | None = None          # only the children of this batch

    def search_kwargs(self, now_ms: int) -> dict[str, Any]:
        """Keyword arguments for ``TaskQueue.search_tasks``."""
        seconds = TIME_RANGES.get(self.time_range)
        return {"status": self.status or None, "priority": self.priority or None,
                "task_type": self.task_type or None, "session_id": self.session_id or None,
                "since_ms": now_ms - int(seconds * 1000) if seconds else None,
                "text": self.search.strip() or None}

    @property
    def scans(self) -> bool:
        """Whether the filters look inside tasks (and so scan a bounded window)."""
        return bool(self.priority or self.task_type or self.session_id or self.search.strip())


@dataclass
class TaskPage:
    """One page of the Tasks table."""

    records: list[dict[str, Any]]
    total: int
    exact: bool
    page: int
    page_size: int
    exact_id: str | None = None          # the search named this task id exactly
    max_rows: int | None = None          # deepest row the pager can reach, when capped
    fetched_ms: int = field(default_factory=clock.now_ms)

    @property
    def pages(self) -> int:
        """Number of pages the pager offers."""
        reachable = self.total if self.max_rows is None else min(self.total, self.max_rows)
        return max(1, -(-reachable // self.page_size))

    @property
    def first_row(self) -> int:
        """1-based number of the first row shown (0 when the page is empty)."""
        return self.page * self.page_size + 1 if self.records else 0

    @property
    def ids(self) -> list[str]:
        """Task ids on this page, in table order."""
        return [r["task_id"] for r in self.records]


def load_task_page(queue: TaskQueue, filters: TaskFilters, page: int = 0, page_size: int = 50,
                   now_ms: int | None = None) -> TaskPage:
    """A page of tasks for the filters: two or three round trips (plus one when the
    search box holds a single word, which is first tried as an exact task id)."""
    if filters.batch:
        return load_batch_children(queue, filters, page, page_size)
    search = filters.search.strip()
    if search and " " not in search and len(search) <= 200:
        try:
            record = queue.get_task(search)
        except ValidationError:         # not something an id can be: search the text
            record = None
        if record is not None:
            return TaskPage([record], 1, True, 0, page_size, exact_id=search)
    merged = not filters.status and not filters.scans
    max_rows = MERGED_PAGE_DEPTH if merged else None
    if max_rows is not None:
        page = min(page, max(0, max_rows // page_size - 1))
    result = queue.search_tasks(**filters.search_kwargs(now_ms or clock.now_ms()),
                                limit=page_size, offset=page * page_size,
                                scan_limit=SEARCH_SCAN)
    return TaskPage(result["tasks"], result["total"], result["exact"], page, page_size,
                    max_rows=max_rows)


def load_batch_children(queue: TaskQueue, filters: TaskFilters, page: int = 0,
                        page_size: int = 50) -> TaskPage:
    """A page of a batch's children, in input order. Without other filters: two round
    trips, any depth. With a status (or type, priority, session, text): its first
    ``SEARCH_SCAN`` children are looked at, so the total is exact for batches up to that
    size."""
    batch_id = filters.batch or ""
    others = filters.status or filters.scans
    if not others:
        total = engine_batch.count_children(queue, batch_id)
        ids = engine_batch.child_window(queue, batch_id, page * page_size, page_size)
        return TaskPage(queue.load_records(ids), total, True, page, page_size)
    ids = engine_batch.child_window(queue, batch_id, 0, SEARCH_SCAN)
    if filters.status:
        statuses = engine_batch.child_statuses(queue, ids)
        ids = [i for i, status in zip(ids, statuses) if status == filters.status]
    if filters.scans:
        kwargs = filters.search_kwargs(0)
        priority = kwargs["priority"]
        ids = queue.matching_ids(ids, int(TaskPriority.parse(priority)) if priority else None,
                              kwargs["task_type"], kwargs["session_id"],
                              (kwargs["text"] or "").lower())
    exact = engine_batch.count_children(queue, batch_id) <= SEARCH_SCAN
    window = ids[page * page_size:(page + 1) * page_size]
    return TaskPage(queue.load_records(window), len(ids), exact, page, page_size)


TASK_COLUMNS = ["Status", "Task id", "Type", "Priority", "Query", "Session", "Worker",
                "Attempts", "Created (UTC)", "Updated (UTC)", "Error"]


def tasks_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The Tasks table: one row per task, newest change first."""
    return pd.DataFrame([{
        "Status": status_label(record_status(r)), "Task id": r["task_id"],
        "Type": r.get("task_type"), "Priority": r.get("priority"),
        "Query": query_preview(r.get("payload")), "Session": r.get("session_id") or "",
        "Worker": r.get("worker_id") or "",
        "Attempts": attempts_text(r),
        "Created (UTC)": to_timestamp(r.get("created_at")),
        "Updated (UTC)": to_timestamp(r.get("updated_at")),
        "Error": corrupt_note(r) or first_line(r.get("error")),
    } for r in records], columns=TASK_COLUMNS)


def first_line(text: Any) -> str:
    """The first line of an error ("" for none)."""
    lines = str(text).splitlines() if text else []
    return lines[0] if lines else ""


def allowed_actions(status: str | None, is_batch: bool = False) -> set[str]:
    """The verbs the engine accepts for a task in ``status`` (delete: always)."""
    allowed = {"delete"}
    if status in ("pending", "scheduled", "running", "retry"):
        allowed |= {"cancel", "requeue"}
    if status in ("failed", "cancelled"):
        allowed.add("retry")
    if is_batch:
        # A batch parent waits in "running": cancel and retry act on its children,
        # and there is nothing of its own to put back in line.
        allowed = {"delete", "cancel", "retry"}
    return allowed


def task_timeline(queue: TaskQueue, record: dict[str, Any],
                  events_scan: int = EVENTS_SCAN) -> pd.DataFrame:
    """What happened to a task, oldest first: its stored timestamps plus its events in
    the newest ``events_scan`` of the stored event log (one round trip)."""
    task_id = record["task_id"]
    rows = []
    for label, name in (("created", "created_at"), ("last started", "started_at"),
                        ("finished", "finished_at")):
        if record.get(name):
            rows.append({"Time (UTC)": to_timestamp(record[name]), "What": label,
                         "Status": "", "Detail": "from the task record"})
    reports = 0     # task.progress events since the last row: one row says how many
    for event in queue.read_events(count=events_scan):
        data = event.get("data") or {}
        if data.get("task_id") != task_id:
            continue
        what = event.get("type") or ""
        if what == "task.progress":
            # Up to ten a second while a handler streams: they make one row, the newest.
            reports += 1
            if reports > 1:
                rows.pop()
            what = f"task.progress ({reports} reports)" if reports > 1 else what
        else:
            reports = 0
        detail = ", ".join(f"{k}: {v}" for k, v in data.items()
                           if k not in ("task_id", "status", "ts", "text"))
        rows.append({"Time (UTC)": _event_time(event), "What": what,
                     "Status": status_label(data.get("status")), "Detail": detail})
    frame = pd.DataFrame(rows, columns=["Time (UTC)", "What", "Status", "Detail"])
    return frame.sort_values("Time (UTC)", kind="stable").reset_index(drop=True)


def _event_time(event: dict[str, Any]) -> pd.Timestamp | None:
    """When an event happened: its ``ts``, else the ms its stream id starts with (None
    when neither reads as a time pandas can hold)."""
    for ts in ((event.get("data") or {}).get("ts"), str(event.get("id", "")).split("-")[0]):
        try:
            return pd.Timestamp(int(float(ts)), unit="ms", tz="UTC")
        except (TypeError, ValueError, OverflowError):
            continue
    return None


# -- workers ---------------------------------------------------------------------------------
@dataclass
class LostWorker:
    """A worker whose heartbeat stopped, and what became of the tasks it held."""

    info: dict[str, Any]
    tasks: pd.DataFrame


@dataclass
class WorkersView:
    """Every registered worker, plus recently lost or stopped ones."""

    table: pd.DataFrame
    lost: list[LostWorker]
    counts: dict[str, int]


WORKER_COLUMNS = ["State", "Name", "Worker id", "Host", "PID", "Concurrency", "In hand",
                  "Processed", "Failed", "Retried", "Uptime", "Last heartbeat (UTC)",
                  "Heartbeat age", "Handlers"]


def load_workers(queue: TaskQueue, events_scan: int = EVENTS_SCAN,
                 now_ms: int | None = None) -> WorkersView:
    """At most five round trips: the registry (2), recent worker events (1), the
    records of workers that already left the registry (1), their tasks' statuses (1)."""
    now_ms = now_ms or clock.now_ms()
    workers = queue.list_workers()
    listed = {w["worker_id"] for w in workers}
    events = queue.read_events(count=events_scan)
    departed: list[str] = []
    recovered: dict[str, list[dict[str, Any]]] = {}
    for event in reversed(events):      # newest first
        data = event.get("data") or {}
        if event.get("type") in ("worker.lost", "worker.stopped"):
            wid = data.get("worker_id")
            if wid and wid not in listed and wid not in departed and len(departed) < 50:
                departed.append(wid)
        elif data.get("reason") == "lease expired" and data.get("worker_id"):
            recovered.setdefault(data["worker_id"], []).append({**data, "type": event.get("type")})
    workers = workers + queue.get_workers(departed)
    lost = [w for w in workers if w.get("state") == "lost"]
    held = {w["worker_id"]: _current_ids(w) for w in lost}
    all_ids = [task_id for ids in held.values() for task_id in ids]
    statuses = dict(zip(all_ids, queue.get_task_statuses(all_ids)))
    stories = [LostWorker(w, _lost_tasks_frame(held[w["worker_id"]], statuses,
                                               recovered.get(w["worker_id"], [])))
               for w in lost]
    counts = {state: sum(1 for w in workers if w.get("state") == state)
              for state in ("running", "lost", "stopped", "stopping")}
    return WorkersView(workers_frame(workers, now_ms), stories, counts)


def _current_ids(worker: dict[str, Any]) -> list[str]:
    try:
        ids = json.loads(worker.get("current") or "[]")
    except ValueError:
        return []
    return [str(i) for i in ids][:50] if isinstance(ids, list) else []


def _lost_tasks_frame(ids: list[str], statuses: dict[str, dict | None],
                      recovered: list[dict[str, Any]]) -> pd.DataFrame:
    """For each task a lost worker held: what the reaper did and where it is now."""
    what_happened = {}
    for data in recovered:
        what_happened.setdefault(data.get("task_id"), (
            "failed: stalled too often" if data.get("type") == "task.failed"
            else "lease expired: put back in line"))
    for task_id in what_happened:
        if task_id not in ids:
            ids = ids + [task_id]
    rows = []
    for task_id in ids:
        now = statuses.get(task_id)
        rows.append({"Task id": task_id,
                     "What happened": what_happened.get(task_id, "lease not expired yet"
                                                        if now and now.get("status") == "running"
                                                        else "—"),
                     "Status now": status_label(now["status"]) if now else "gone (expired or deleted)",
                     "Now held by": (now or {}).get("worker_id") or ""})
    return pd.DataFrame(rows, columns=["Task id", "What happened", "Status now", "Now held by"])


def workers_frame(workers: Sequence[dict[str, Any]], now_ms: int) -> pd.DataFrame:
    """The Workers table."""
    rows = []
    for w in workers:
        beat_ms = iso_ms(w.get("last_heartbeat"))
        started = _int(w.get("started_at"))
        ended = _int(w.get("stopped_at")) or _int(w.get("lost_at")) or beat_ms
        end_ms = now_ms if w.get("state") in ("running", "starting", "stopping") else (ended or now_ms)
        rows.append({
            "State": worker_state_label(w.get("state")), "Name": w.get("name") or w["worker_id"],
            "Worker id": w["worker_id"], "Host": w.get("host", ""), "PID": w.get("pid", ""),
            "Concurrency": _int(w.get("concurrency")), "In hand": _int(w.get("in_hand")),
            "Processed": _int(w.get("processed")), "Failed": _int(w.get("failed")),
            "Retried": _int(w.get("retried")),
            "Uptime": describe_age((end_ms - started) / 1000) if started else "—",
            "Last heartbeat (UTC)": to_timestamp(w.get("last_heartbeat")),
            "Heartbeat age": describe_age((now_ms - beat_ms) / 1000) + " ago" if beat_ms else "—",
            "Handlers": w.get("handlers", ""),
        })
    return pd.DataFrame(rows, columns=WORKER_COLUMNS)


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


# -- schedules, dead letters, events ------------------------------------------------------------
SCHEDULE_COLUMNS = ["Due (UTC)", "Due in", "Status", "Task id", "Type", "Priority", "Query",
                    "Attempts", "Error"]


def scheduled_frame(records: Sequence[dict[str, Any]], now_ms: int) -> pd.DataFrame:
    """Tasks waiting for their due time, soonest first."""
    rows = []
    for r in records:
        due = iso_ms(r.get("due_at"))
        rows.append({"Due (UTC)": to_timestamp(r.get("due_at")),
                     "Due in": "due now" if due is not None and due <= now_ms
                     else describe_age((due - now_ms) / 1000) if due else "—",
                     "Status": status_label(record_status(r)), "Task id": r["task_id"],
                     "Type": r.get("task_type"), "Priority": r.get("priority"),
                     "Query": query_preview(r.get("payload")), "Attempts": r.get("attempts"),
                     "Error": corrupt_note(r) or first_line(r.get("error"))})
    return pd.DataFrame(rows, columns=SCHEDULE_COLUMNS)


def failed_groups_frame(groups: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Dead letters grouped by error, largest group first."""
    return pd.DataFrame([{
        "Error": g["error"], "Count": g["count"], "Task types": ", ".join(g["task_types"]),
        "Last failed (UTC)": to_timestamp(g["last_failed_at"]),
        "First failed (UTC)": to_timestamp(g["first_failed_at"]),
    } for g in groups], columns=["Error", "Count", "Task types", "Last failed (UTC)",
                                 "First failed (UTC)"])


def failed_tasks_frame(records: Sequence[dict[str, Any] | None]) -> pd.DataFrame:
    """Failed tasks (from ``search_tasks`` or ``get_task_statuses`` rows)."""
    return pd.DataFrame([{
        "Task id": r["task_id"], "Type": r.get("task_type"), "Priority": r.get("priority"),
        "Error": corrupt_note(r) or first_line(r.get("error")),
        "Attempts": r.get("attempts"), "Worker": r.get("worker_id") or "",
        "Failed at (UTC)": to_timestamp(r.get("finished_at")),
    } for r in records if r], columns=["Task id", "Type", "Priority", "Error", "Attempts",
                                       "Worker", "Failed at (UTC)"])


EVENT_TYPES = ("task.submitted", "task.status_changed", "task.completed", "task.failed",
               "task.retry", "task.cancelled", "task.deleted", "task.progress", "batch.progress",
               "worker.started", "worker.stopped", "worker.lost", "schedule.paused",
               "schedule.resumed", "schedule.removed")
EVENT_COLUMNS = ["Time (UTC)", "Event", "Task id", "Status", "Worker", "Detail", "Event id"]


def filter_events(events: Sequence[dict[str, Any]], types: Sequence[str] | None = None,
                  text: str = "") -> list[dict[str, Any]]:
    """Events whose type is in ``types`` (None or empty = every type, also ones this
    console does not know yet) and whose ids or details contain ``text``
    (case-insensitive)."""
    wanted = set(types) if types else None
    needle = text.strip().lower()
    out = []
    for event in events:
        if wanted is not None and event.get("type") not in wanted:
            continue
        if needle and needle not in json.dumps(event.get("data") or {}, ensure_ascii=False).lower():
            continue
        out.append(event)
    return out


def events_frame(events: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Events newest first."""
    rows = []
    for event in reversed(events):
        data = event.get("data") or {}
        rows.append({
            "Time (UTC)": _event_time(event), "Event": event.get("type") or "",
            "Task id": data.get("task_id", ""),
            "Status": status_label(data.get("status")) if data.get("status") else "",
            "Worker": data.get("worker_id") or data.get("worker") or "",
            "Detail": ", ".join(f"{k}: {v}" for k, v in data.items()
                                if k not in ("task_id", "status", "ts", "worker_id", "worker")),
            "Event id": event.get("id", ""),
        })
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)


# -- batches -----------------------------------------------------------------------------------
BATCH_FAILURES_SHOWN = 200     # failed children listed in a batch's view


@dataclass
class BatchView:
    """One batch: its progress, and its failed children (the first ones, in input order)."""

    summary: dict[str, Any]
    failures: list[dict[str, Any]]
    failures_scanned: int

    @property
    def finished(self) -> bool:
        """Whether every child has ended."""
        return self.summary["done"] >= self.summary["total"] > 0


def load_batch_view(queue: TaskQueue, batch_id: str) -> BatchView | None:
    """The batch's summary and failed children; None when ``batch_id`` is no batch.
    Four round trips: the summary, the first ``SEARCH_SCAN`` child ids, their statuses,
    the failed ones' records."""
    [summary] = engine_batch.batch_summaries(queue, [batch_id])
    if summary is None:
        return None
    failures: list[dict[str, Any]] = []
    scanned = 0
    if summary["failed"] or summary["cancelled"]:
        ids = engine_batch.child_window(queue, batch_id, 0, SEARCH_SCAN)
        scanned = len(ids)
        statuses = engine_batch.child_statuses(queue, ids)
        failed = [i for i, status in zip(ids, statuses) if status in ("failed", "cancelled")]
        failures = queue.load_records(failed[:BATCH_FAILURES_SHOWN])
    return BatchView(summary, failures, scanned)


def recent_batches(queue: TaskQueue, limit: int = 50) -> list[dict[str, Any]]:
    """The newest batches (by their last change) with their progress; three round trips."""
    found = queue.search_tasks(task_type="batch_query", limit=limit, scan_limit=SEARCH_SCAN)
    ids = [r["task_id"] for r in found["tasks"]]
    return [s for s in engine_batch.batch_summaries(queue, ids) if s is not None]


BATCH_COLUMNS = ["Status", "Batch id", "Source", "Progress", "Queries", "Completed", "Failed",
                 "Cancelled", "Created (UTC)", "Finished (UTC)"]


def batches_frame(summaries: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The Batches table: one row per batch, newest first."""
    return pd.DataFrame([{
        "Status": status_label(s.get("status")), "Batch id": s["batch_id"],
        "Source": s.get("source") or "",
        "Progress": (s["done"] / s["total"]) if s.get("total") else 0.0,
        "Queries": s.get("total"), "Completed": s.get("completed"), "Failed": s.get("failed"),
        "Cancelled": s.get("cancelled"),
        "Created (UTC)": _ms_timestamp(s.get("created_at")),
        "Finished (UTC)": _ms_timestamp(s.get("finished_at")),
    } for s in summaries], columns=BATCH_COLUMNS)


def _ms_timestamp(ms: int | None) -> pd.Timestamp | None:
    if ms is None:
        return None
    try:
        return pd.Timestamp(int(ms), unit="ms", tz="UTC")
    except (TypeError, ValueError, OverflowError):
        return None


def batch_failures_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """A batch's failed (and cancelled) children: input row, id, query, status, error."""
    return pd.DataFrame([{
        "Row": ((r.get("payload") or {}).get("index", -1) + 1
                if isinstance((r.get("payload") or {}).get("index"), int) else None),
        "Status": status_label(record_status(r)), "Task id": r["task_id"],
        "Query": query_preview(r.get("payload")), "Attempts": attempts_text(r),
        "Error": corrupt_note(r) or first_line(r.get("error")),
    } for r in records], columns=["Row", "Status", "Task id", "Query", "Attempts", "Error"])
