"""Validation of the Submit page's inputs, and their idempotency keys, without Streamlit.

Each validator returns what to submit plus a ``{field: message}`` dict; the page shows
every message next to its field and submits nothing while the dict is not empty.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from engine.agent import MAX_QUERY_CHARS

WHEN_NOW, WHEN_AT, WHEN_DELAY = "Run now", "At a time", "After a delay"
WHEN_OPTIONS = (WHEN_NOW, WHEN_AT, WHEN_DELAY)
PRIORITY_OPTIONS = ("urgent", "high", "normal", "low")
MAX_RETRIES = 100
MAX_DELAY_SECONDS = 30 * 86400
MAX_SCHEDULE_AHEAD = timedelta(days=365)
MAX_SESSION_CHARS = 200
MAX_BATCH_QUERIES = 10_000


@dataclass
class Checked:
    """The outcome of a validation: ``options`` to submit with, or ``errors`` by field."""

    options: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when there is nothing to explain."""
        return not self.errors


def check_query(query: Any) -> str | None:
    """The error for one query, or None when it is acceptable."""
    if not isinstance(query, str) or not query.strip():
        return "Enter a query."
    if len(query) > MAX_QUERY_CHARS:
        return f"The query is {len(query):,} characters; the limit is {MAX_QUERY_CHARS:,}."
    return None


def check_common(checked: Checked, priority: Any, session_id: Any, max_retries: Any) -> None:
    """Validate the fields every submit form shares, filling ``checked``."""
    if priority not in PRIORITY_OPTIONS:
        checked.errors["priority"] = "Choose urgent, high, normal or low."
    else:
        checked.options["priority"] = priority
    session = (session_id or "").strip()
    if len(session) > MAX_SESSION_CHARS:
        checked.errors["session_id"] = f"Keep the session id under {MAX_SESSION_CHARS} characters."
    elif any(ord(ch) < 32 for ch in session):
        checked.errors["session_id"] = "The session id cannot contain control characters."
    else:
        checked.options["session_id"] = session or None
    if isinstance(max_retries, bool) or not isinstance(max_retries, (int, float)) \
            or int(max_retries) != max_retries or not 0 <= max_retries <= MAX_RETRIES:
        checked.errors["max_retries"] = f"Retries must be a whole number from 0 to {MAX_RETRIES}."
    else:
        checked.options["max_retries"] = int(max_retries)


def check_single(query: Any, priority: Any, session_id: Any, max_retries: Any, when: str,
                 run_at: datetime | None, delay_seconds: Any, now: datetime) -> Checked:
    """Validate the single-query form. ``run_at`` is a naive datetime read as UTC (the
    form says so: browser and server may be in different time zones); ``now`` is an
    aware datetime. ``options`` are keyword arguments for ``execute_async``."""
    checked = Checked()
    error = check_query(query)
    if error:
        checked.errors["query"] = error
    else:
        checked.options["query"] = query.strip()
    check_common(checked, priority, session_id, max_retries)
    if when == WHEN_AT:
        if run_at is None:
            checked.errors["run_at"] = "Pick the date and time to run it."
        else:
            moment = run_at if run_at.tzinfo else run_at.replace(tzinfo=timezone.utc)
            if moment <= now:
                checked.errors["run_at"] = "That time has passed: pick a time in the future."
            elif moment - now > MAX_SCHEDULE_AHEAD:
                checked.errors["run_at"] = "Schedule at most a year ahead."
            else:
                checked.options["run_at"] = moment
    elif when == WHEN_DELAY:
        if isinstance(delay_seconds, bool) or not isinstance(delay_seconds, (int, float)) \
                or not 0 < delay_seconds <= MAX_DELAY_SECONDS:
            checked.errors["delay"] = (f"The delay must be more than 0 and at most "
                                       f"{MAX_DELAY_SECONDS // 86400} days (in seconds).")
        else:
            checked.options["delay"] = float(delay_seconds)
    elif when != WHEN_NOW:
        checked.errors["when"] = "Choose when to run it."
    return checked


def idempotency_key(kind: str, *parts: Any) -> str:
    """``console:<kind>:<sha256>``, an idempotency key for the engine: the same ``parts``
    give the same key, and the engine answers a second submit with that key with the
    first one's id instead of a new task. ``parts`` are text, bytes or anything ``str``
    reads; each is length-prefixed, so ("ab", "c") and ("a", "bc") differ."""
    digest = hashlib.sha256(kind.encode("utf-8"))
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode("utf-8")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return f"console:{kind}:{digest.hexdigest()}"


def parse_query_lines(text: str | None) -> list[str]:
    """The non-blank lines of ``text``, stripped: one query per line."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def check_queries(queries: list[str], field_name: str = "queries") -> dict[str, str]:
    """Errors for a list of batch queries (empty dict when they can be submitted)."""
    if not queries:
        return {field_name: "Enter at least one query (one per line)."}
    if len(queries) > MAX_BATCH_QUERIES:
        return {field_name: f"{len(queries):,} queries: submit at most {MAX_BATCH_QUERIES:,} "
                            "per batch."}
    for number, query in enumerate(queries, 1):
        error = check_query(query)
        if error:
            return {field_name: f"Query {number}: {error}"}
    return {}


def check_batch(text: str | None, priority: Any, session_id: Any, max_retries: Any) -> Checked:
    """Validate the batch form: ``options["queries"]`` holds the parsed lines."""
    checked = Checked()
    queries = parse_query_lines(text)
    checked.errors.update(check_queries(queries))
    if not checked.errors:
        checked.options["queries"] = queries
    check_common(checked, priority, session_id, max_retries)
    return checked
