"""Batches of queries from the Submit page: submit, follow, export. No Streamlit here.

A batch is one ``BATCH_QUERY`` task that ``engine.batch`` fans out into one
``AGENT_QUERY`` child per query; its progress and its children's answers come from
``engine.batch``. This module adds what the console needs around that: a preview of an
uploaded CSV and a guess at its query column. When the engine offers
``engine.batch.submit_csv`` / ``export_results_csv`` (each row kept with its task, so a
results file can be built from any browser, after any reload) they are used; otherwise
the uploaded rows are kept in the job and the results file is built here.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import pandas as pd

from engine import Task, TaskQueue, TaskType
from engine import batch as engine_batch
from engine.errors import ValidationError

from .forms import MAX_BATCH_QUERIES, check_queries

QUERY_COLUMN_NAMES = ("query", "prompt", "question", "text", "input", "message")
RESULT_COLUMNS = ("status", "answer", "error", "duration_seconds", "task_id")
MAX_CSV_BYTES = 50 * 1024 * 1024


@dataclass
class BatchJob:
    """A batch submitted from this console session.

    ``source_rows`` are the uploaded CSV rows (as dicts) that became queries, in query
    order, so the results file can carry every uploaded column.
    """

    batch_id: str
    label: str
    total: int
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(
        timespec="seconds"))
    source_rows: list[dict[str, Any]] | None = None


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
               label: str = "") -> BatchJob:
    """Submit every data row of an uploaded CSV as one batch, the query read from
    ``query_column``. Raises ValidationError (writing nothing) for a rejected file."""
    options: dict[str, Any] = {"session_id": session_id or None}
    if max_retries is not None:
        options["max_retries"] = max_retries
    engine_submit = getattr(engine_batch, "submit_csv", None)
    if engine_submit is not None:
        batch_id = engine_submit(data, query_column=query_column, priority=priority,
                                 queue=queue, **options)
        total = batch_progress(queue, batch_id)["total"]
        return BatchJob(batch_id=batch_id, label=label or "CSV upload", total=total)
    try:
        frame = read_csv(data)
        queries, blank = queries_from_column(frame, query_column)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    if blank:
        raise ValidationError(describe_blank_rows(blank))
    return submit_batch(queue, queries, priority=priority, session_id=session_id,
                        max_retries=max_retries, label=label or "CSV upload",
                        source_rows=frame.to_dict(orient="records"))


def submit_batch(queue: TaskQueue, queries: Sequence[str], *, priority: str = "normal",
                 session_id: str | None = None, max_retries: int | None = None,
                 label: str = "", source_rows: list[dict[str, Any]] | None = None) -> BatchJob:
    """Submit ``queries`` as one batch (one parent task, one child per query) and return
    the job to follow. Raises ValidationError, writing nothing, for bad input."""
    errors = check_queries(list(queries))
    if errors:
        raise ValidationError(next(iter(errors.values())))
    payload: dict[str, Any] = {"queries": list(queries)}
    if label:
        payload["source"] = label   # copied into every child: says where a query came from
    options: dict[str, Any] = {"priority": priority, "session_id": session_id or None}
    if max_retries is not None:
        options["max_retries"] = max_retries
    task = Task(task_type=TaskType.BATCH_QUERY, payload=payload, **options)
    batch_id = queue.submit_task(task)
    return BatchJob(batch_id=batch_id, label=label or f"{len(queries)} queries",
                    total=len(queries), source_rows=source_rows)


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


def results_frame(queue: TaskQueue, job: BatchJob) -> pd.DataFrame:
    """One row per query, in input order: the uploaded columns (for a CSV) or the query,
    then ``status``, ``answer``, ``error``, ``duration_seconds`` and ``task_id``."""
    items = engine_batch.batch_items(queue, job.batch_id)
    outcome = pd.DataFrame([{
        "status": item["status"], "answer": _text(item.get("answer")),
        "error": item.get("error") or "", "duration_seconds": item.get("duration"),
        "task_id": item["task_id"]} for item in items], columns=list(RESULT_COLUMNS))
    if job.source_rows and len(job.source_rows) == len(items):
        source = pd.DataFrame(job.source_rows)
        # An uploaded column with one of our names keeps its name; ours gets a suffix.
        outcome.columns = [f"{c} (queue)" if c in source.columns else c for c in outcome.columns]
        return pd.concat([source.reset_index(drop=True), outcome], axis=1)
    queries = pd.DataFrame({"row": [item["index"] + 1 for item in items],
                            "query": [item.get("query") or "" for item in items]})
    return pd.concat([queries, outcome], axis=1)


def results_csv(queue: TaskQueue, job: BatchJob) -> bytes:
    """The results file as UTF-8 CSV bytes (with a BOM, so spreadsheet programs read
    accents correctly): the engine's export when it has one, else :func:`results_frame`."""
    export = getattr(engine_batch, "export_results_csv", None)
    if export is not None and not job.source_rows:
        return export(job.batch_id, queue=queue).encode("utf-8-sig")
    return results_frame(queue, job).to_csv(index=False).encode("utf-8-sig")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
