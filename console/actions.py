"""Operator actions on tasks, alone or in bulk, through the engine's verbs only.

No Streamlit here: a page calls :func:`apply_action` and shows the report's summary.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import Any, Sequence

import redis

from engine import InvalidTransition, QueueError, TaskNotFound, TaskQueue

from .data import SEARCH_SCAN, TaskFilters

ACTIONS = ("cancel", "retry", "requeue", "delete")
PAST_TENSE = {"cancel": "Cancelled", "retry": "Retried", "requeue": "Requeued",
              "delete": "Deleted"}
BULK_LIMIT = 1000            # tasks one click may act on: a mistake stays bounded
RETRY_ALL_LIMIT = 10_000     # "retry all failed" works through at most this many


@dataclass
class ActionReport:
    """What a (bulk) action did: ids done, ids skipped with the reason, ids not found."""

    action: str
    done: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    more_remaining: bool = False

    @property
    def level(self) -> str:
        """``success`` when everything asked for was done, else ``warning``."""
        return "success" if self.done and not self.skipped and not self.missing else "warning"

    def summary(self) -> str:
        """One sentence for the operator; a refusal of one task says why."""
        if not self.done and len(self.skipped) == 1 and not self.missing:
            task_id, reason = self.skipped[0]
            return f"Not {PAST_TENSE.get(self.action, self.action).lower()}: task {task_id} {reason}."
        if not self.done and len(self.missing) == 1 and not self.skipped:
            return (f"Not {PAST_TENSE.get(self.action, self.action).lower()}: task "
                    f"{self.missing[0]} no longer exists.")
        noun = "task" if len(self.done) == 1 else "tasks"
        parts = [f"{PAST_TENSE.get(self.action, self.action)} {len(self.done)} {noun}."]
        if self.skipped:
            reasons = sorted({reason for _, reason in self.skipped})
            parts.append(f"Skipped {len(self.skipped)} ({'; '.join(reasons[:3])}).")
        if self.missing:
            parts.append(f"{len(self.missing)} no longer exist.")
        if self.more_remaining:
            parts.append("More tasks match: run it again for the next ones.")
        return " ".join(parts)


def apply_action(queue: TaskQueue, action: str, task_ids: Sequence[str],
                 priority: Any = None, zone: tzinfo | None = None) -> ActionReport:
    """Run ``action`` (cancel, retry, requeue or delete) on each id. The engine decides:
    a task in a status the verb does not accept (it may have changed since the page was
    drawn) is skipped with the reason, "was already completed at 11:07:34 CET" (times in
    ``zone``, default UTC), never forced."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    report = ActionReport(action)
    ids = list(dict.fromkeys(task_ids))       # de-duplicated, order kept
    if action == "delete":
        deleted = queue.delete_tasks(ids)
        # delete_tasks counts; when some were already gone we cannot tell which.
        report.done = ids[:deleted]
        report.missing = ids[deleted:]
        return report
    for task_id in ids:
        try:
            if action == "cancel":
                queue.cancel_task(task_id, reason="cancelled from the console")
            elif action == "retry":
                queue.retry_task(task_id, priority=priority)
            else:
                queue.requeue_task(task_id, priority=priority)
            report.done.append(task_id)
        except TaskNotFound:
            report.missing.append(task_id)
        except InvalidTransition as exc:
            report.skipped.append((task_id, refusal_reason(queue, task_id, exc, zone)))
        except QueueError as exc:
            report.skipped.append((task_id, _short(exc)))
    return report


def matching_ids(queue: TaskQueue, filters: TaskFilters, now_ms: int,
                 limit: int = BULK_LIMIT) -> tuple[list[str], int]:
    """Ids of the newest ``limit`` tasks matching ``filters``, and how many match in all
    (a lower bound when the filters scan). One search: two or three round trips."""
    result = queue.search_tasks(**filters.search_kwargs(now_ms), limit=limit, offset=0,
                                scan_limit=max(SEARCH_SCAN, limit))
    return [r["task_id"] for r in result["tasks"]], result["total"]


def retry_all_failed(queue: TaskQueue, limit: int = RETRY_ALL_LIMIT) -> ActionReport:
    """Retry failed tasks, newest first, until none is left or ``limit`` were tried."""
    report = ActionReport("retry")
    tried: set[str] = set()
    while len(tried) < limit:
        page = queue.search_tasks(status="failed", limit=min(BULK_LIMIT, limit - len(tried)))
        ids = [r["task_id"] for r in page["tasks"] if r["task_id"] not in tried]
        if not ids:
            break
        tried.update(ids)
        step = apply_action(queue, "retry", ids)
        report.done += step.done
        report.skipped += step.skipped
        report.missing += step.missing
    report.more_remaining = len(tried) >= limit and queue.count_tasks("failed") > 0
    return report


def refusal_reason(queue: TaskQueue, task_id: str, exc: Exception,
                   zone: tzinfo | None = None) -> str:
    """Why the engine refused: the task's state now, and since when (one read)."""
    try:
        record = queue.get_task_status(task_id)
    except (QueueError, ValueError, redis.RedisError):
        record = None
    if not record or not record.get("status"):
        return _short(exc)
    status = record["status"]
    when = record.get("finished_at") if status in ("completed", "failed", "cancelled") else None
    if when:
        moment = datetime.fromisoformat(when).astimezone(zone or timezone.utc)
        return f"was already {status} at {moment:%H:%M:%S %Z}"
    return f"is {status} now"


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:119] + "…"
