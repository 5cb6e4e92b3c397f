"""Batches of queries from the Submit page: submit, follow, export. No Streamlit here.

A batch is one ``BATCH_QUERY`` task that ``engine.batch`` fans out into one
``AGENT_QUERY`` child per query; its progress, its children's answers and its results
file come from ``engine.batch`` (``submit_csv`` keeps each uploaded row with its task and
``export_results_csv`` gives them back with the answers, from any browser, after any
reload). This module adds what the console needs around that: a preview of an uploaded
CSV, a guess at its query column, and the idempotency key that makes a repeated click
return the first batch.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import pandas as pd

from engine import Task, TaskQueue, TaskType
from engine import batch as engine_batch
from engine.errors import ValidationError

from .forms import MAX_BATCH_QUERIES, check_queries

QUERY_COLUMN_NAMES = ("query", "prompt", "question", "text", "input", "message")
MAX_CSV_BYTES = 50 * 1024 * 1024


@dataclass
class BatchJob:
    """A batch submitted (or followed) from this console session."""

    batch_id: str
    label: str
    total: int
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(
        timespec="seconds"))


def read_csv(data: bytes) -> pd.DataFrame:
    """Parse an uploaded CSV, every cell as text. Raises ValueError with a message an
    operator can act on (empty file, not CSV, too large)."""
    if not data or not data.strip():
        raise ValueError("The file is empty.")
    if len(data) > MAX_CSV_BYTES:
        raise ValueError(f"The file is {len(data) / 1e6:.0f} MB; the limit is "
                         f"{MAX_CSV_BYTES // 1024 // 1024} MB.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")   # every byte decodes: better odd letters than a refusal
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                            skip_blank_lines=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise ValueError(f"This does not read as CSV: {exc}") from None
    if frame.empty or not len(frame.columns):
        raise ValueError("The file has a header but no rows.")
    if len(frame) > MAX_BATCH_QUERIES:
        raise ValueError(f"The file has {len(frame):,} rows; submit at most "
                         f"{MAX_BATCH_QUERIES:,} per batch.")
    frame.columns = [str(c).strip() or f"column {i + 1}" for i, c in enumerate(frame.columns)]
    return frame


def guess_query_column(frame: pd.DataFrame) -> str | None:
    """The column that most likely holds the queries: a conventional name, else the
    first column with any text in it."""
    by_name = {str(c).strip().lower(): c for c in frame.columns}
    for name in QUERY_COLUMN_NAMES:
        if name in by_name:
            return by_name[name]
    for column in frame.columns:
        if frame[column].astype(str).str.strip().ne("").any():
            return column
    return None


def queries_from_column(frame: pd.DataFrame, column: str) -> tuple[list[str], list[int]]:
    """``(queries, numbers of the data rows whose query is blank)`` from ``column``
    (data rows count from 1, under the header). A blank query is an error, not a row to
    skip silently: the results file must line up with the uploaded one."""
    if column not in frame.columns:
        raise ValueError(f"There is no column named {column!r}.")
    values = frame[column].astype(str).str.strip().tolist()
    return values, [number for number, text in enumerate(values, 1) if not text]


def describe_blank_rows(numbers: list[int]) -> str | None:
    """The error for blank queries (None when there are none)."""
    if not numbers:
        return None
    shown = ", ".join(str(n) for n in numbers[:10]) + (" …" if len(numbers) > 10 else "")
    return (f"{len(numbers):,} row{'s' if len(numbers) > 1 else ''} of this column "
            f"{'have' if len(numbers) > 1 else 'has'} no query (data row {shown}): "
            "fill them in, remove them, or choose another column.")


def submit_csv(queue: TaskQueue, data: bytes, query_column: str, *, priority: str = "normal",
               session_id: str | None = None, max_retries: int | None = None,
               label: str = "", idempotency_key: str | None = None) -> BatchJob:
    """Submit every data row of an uploaded CSV as one batch, the query read from
    ``query_column`` (``engine.batch.submit_csv``). Raises ValidationError (writing
    nothing) for a rejected file. A second call with the same ``idempotency_key``
    returns the first call's batch and writes nothing."""
    batch_id = engine_batch.submit_csv(data, query_column=query_column, priority=priority,
                                       queue=queue, **_task_options(session_id, max_retries,
                                                                    idempotency_key))
    total = batch_progress(queue, batch_id)["total"]
    return BatchJob(batch_id=batch_id, label=label or "CSV upload", total=total)


def submit_batch(queue: TaskQueue, queries: Sequence[str], *, priority: str = "normal",
                 session_id: str | None = None, max_retries: int | None = None,
                 label: str = "", idempotency_key: str | None = None) -> BatchJob:
    """Submit ``queries`` as one batch (one parent task, one child per query) and return
    the job to follow. Raises ValidationError, writing nothing, for bad input. A second
    call with the same ``idempotency_key`` returns the first call's batch."""
    errors = check_queries(list(queries))
    if errors:
        raise ValidationError(next(iter(errors.values())))
    payload: dict[str, Any] = {"queries": list(queries)}
    if label:
        payload["source"] = label   # copied into every child: says where a query came from
    task = Task(task_type=TaskType.BATCH_QUERY, payload=payload, priority=priority,
                **_task_options(session_id, max_retries, idempotency_key))
    batch_id = queue.submit_task(task)
    return BatchJob(batch_id=batch_id, label=label or f"{len(queries)} queries",
                    total=len(queries))


def _task_options(session_id: str | None, max_retries: int | None,
                  idempotency_key: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {"session_id": session_id or None}
    if max_retries is not None:
        options["max_retries"] = max_retries
    if idempotency_key:
        options["idempotency_key"] = idempotency_key
    return options


def batch_progress(queue: TaskQueue, job: BatchJob | str) -> dict[str, Any]:
    """``{'status', 'total', 'completed', 'failed', 'cancelled', 'done', 'finished',
    'fraction'}`` of a batch: one Redis round trip. Raises TaskNotFound once the batch
    has expired or was deleted."""
    batch_id = job.batch_id if isinstance(job, BatchJob) else job
    progress = dict(engine_batch.batch_progress(queue, batch_id))
    total = progress["total"] or 0
    progress["finished"] = total > 0 and progress["done"] >= total
    progress["fraction"] = min(1.0, progress["done"] / total) if total else 0.0
    return progress


def results_csv(queue: TaskQueue, job: BatchJob | str) -> bytes:
    """The results file (``engine.batch.export_results_csv``) as UTF-8 CSV bytes, with a
    BOM so spreadsheet programs read accents correctly: the uploaded columns (or
    ``query``) with each row's answer, status, error, duration, tokens and cost."""
    batch_id = job.batch_id if isinstance(job, BatchJob) else job
    return engine_batch.export_results_csv(batch_id, queue=queue).encode("utf-8-sig")
