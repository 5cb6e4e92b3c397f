"""CSV jobs: a spreadsheet of queries in, the same rows with the answers out.

:func:`submit_csv` turns each data row into one AGENT_QUERY child of a BATCH_QUERY parent
(see :mod:`engine.batch`); each child keeps its input row in its payload (``row``), so
:func:`export_results_csv` can give back every input column with ``answer``, ``status``,
``error`` and ``duration`` added, in input order. Public under :mod:`engine.batch`.

The file is checked whole before anything is written: size (``QUEUE_CSV_MAX_BYTES``), row
count (``QUEUE_CSV_MAX_ROWS``), encoding (UTF-8, with or without a byte-order mark), the
query column, blank queries and per-row payload size. A rejected file raises
:class:`ValidationError` naming the problem and the rows, and writes nothing. Rows are
numbered as data rows, first row under the header = data row 1, and also by the row
number a spreadsheet shows (data row + 1, the header being row 1).
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Iterable, Sequence

from .batch_reads import child_item, child_records
from .batch_submit import MAX_BATCH_SIZE, child_tasks, submit_family
from .queue import TaskQueue, get_task_queue
from .crypto import load_payload
from .errors import PayloadTooLarge, TaskNotFound, ValidationError, translate_redis_errors
from .models import MAX_QUERY_CHARS, Task, TaskType
from .serialization import dumps


RESULT_COLUMNS = ("answer", "status", "error", "duration", "tokens", "cost")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_SHOWN_ROWS = 10       # rows named in one error message at most


def submit_csv(file: Any, query_column: str = "query", priority: Any = "low",
               queue: TaskQueue | None = None, **task_options: Any) -> str:
    """Submit every data row of a CSV file as one query of a new batch; returns the batch id.

    ``file`` is a path, the file's bytes, or an open file (binary or text); a pandas
    DataFrame works too. ``task_options`` are :class:`Task` fields every row's task gets
    (``max_retries``, ``retry_delay``, ``timeout``, ``session_id``, ``idempotency_key`` for
    the batch...). Raises ValidationError, writing nothing, when the file is rejected.
    """
    queue = queue or _default_queue()
    settings = queue.settings
    if "payload" in task_options or "task_type" in task_options:
        raise ValidationError("submit_csv builds the payload from the file: pass Task options "
                              "such as max_retries or timeout, not payload or task_type")
    text = _decode(_read_bytes(file, settings.csv_max_bytes))
    # A CSV job is one batch, so the batch limit caps the row limit whatever it is set to.
    columns, rows = parse_rows(text, min(settings.csv_max_rows, MAX_BATCH_SIZE))
    column = _find_column(columns, query_column)
    queries = _queries(rows, column)
    parent = Task(task_type=TaskType.BATCH_QUERY, priority=priority, **task_options,
                  payload={"source": "csv", "query_column": column, "columns": columns})
    children = _children(parent, queries, rows, settings.max_payload_bytes)
    parent.payload["count"] = len(children)
    return submit_family(queue, parent, children)


def export_results_csv(batch_id: str, queue: TaskQueue | None = None,
                       path_or_buffer: Any = None) -> str | None:
    """The batch's input rows with ``answer``, ``status``, ``error``, ``duration``
    (seconds), ``tokens`` and ``cost`` (dollars; empty when not counted or not priced) added, as CSV text, in input order. Like pandas' ``to_csv``: returns the text
    when ``path_or_buffer`` is None, else writes it there (a path, or an open file) and
    returns None. Works while the batch runs (unfinished rows show their status); a column
    name the input already uses gets a ``queue_`` prefix. A batch not from a CSV file gives
    one ``query`` column. Rows are kept as long as the tasks (``QUEUE_RESULT_TTL``)."""
    queue = queue or _default_queue()
    with translate_redis_errors():
        payload = queue.client.hget(queue.keys.task(batch_id), "payload")
        is_batch = queue.client.hexists(queue.keys.task(batch_id), "total")
    if payload is None:
        raise TaskNotFound(f"batch {batch_id} not found (never submitted, or expired)")
    if not is_batch:
        raise ValidationError(f"task {batch_id} is not a batch")
    columns = load_payload(payload, {}).get("columns") or ["query"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*columns, *_result_names(columns)])
    for row, item in _rows_with_outcomes(queue, batch_id):
        writer.writerow([_cell(row.get(name, "")) for name in columns] +
                        [_untrusted(item["answer"]), item["status"], _untrusted(item["error"]),
                         "" if item["duration"] is None else round(float(item["duration"]), 3),
                         "" if item["tokens"] is None else item["tokens"], _dollars(item["cost"])])
    return _write(out.getvalue(), path_or_buffer)


# -- reading the file -----------------------------------------------------------------------
def _read_bytes(file: Any, limit: int) -> bytes:
    if isinstance(file, (bytes, bytearray, memoryview)):
        data = bytes(file)
    elif isinstance(file, (str, os.PathLike)):
        try:
            size = os.path.getsize(file)
        except OSError:
            raise ValidationError(f"cannot read {os.fspath(file)!r}: no such file") from None
        _check_size(size, limit)
        with open(file, "rb") as handle:
            data = handle.read(limit + 1)
    elif callable(getattr(file, "to_csv", None)):   # a pandas DataFrame
        data = file.to_csv(index=False).encode("utf-8")
    elif callable(getattr(file, "read", None)):
        data = file.read(limit + 1)
        if isinstance(data, str):
            data = data.encode("utf-8")
    else:
        raise ValidationError(f"file must be a path, bytes or an open file, got {type(file).__name__}")
    _check_size(len(data), limit)
    return data


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise ValidationError(f"the file is over the size limit of {_mib(limit)} "
                              f"(QUEUE_CSV_MAX_BYTES): split it, or raise the limit")


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB" if size >= 1024 * 1024 else f"{size:,} bytes"


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValidationError("the file is UTF-16 text; save it as CSV UTF-8 (in Excel: "
                              "Save As > 'CSV UTF-8 (Comma delimited)')")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ValidationError(
            f"the file is not UTF-8 text: byte 0x{data[exc.start]:02X} on line {line} of the "
            "file cannot be read (the file is probably Latin-1 or Windows-1252); save it as "
            "CSV UTF-8 (in Excel: Save As > 'CSV UTF-8 (Comma delimited)'), or convert it, "
            "e.g. iconv -f WINDOWS-1252 -t UTF-8") from None
    if not text.strip():
        raise ValidationError("the file is empty: expected a header row (e.g. 'query') and "
                              "one query per row")
    return text


def parse_rows(text: str, max_rows: int) -> tuple[list[str], list[dict[str, str] | None]]:
    """The header and the data rows of CSV ``text``; an empty line is kept as None (and
    skipped) so row numbers stay those a spreadsheet shows. Raises ValidationError naming
    the row."""
    # strict: an unclosed quote is an error, not a cell that swallows the rest of the file.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise ValidationError(f"the header row is not valid CSV: {exc}") from None
    _check_header(header)
    rows: list[dict[str, str] | None] = []
    try:
        for record in reader:
            number = len(rows) + 1
            if number > max_rows:
                raise ValidationError(f"the file has more than {max_rows:,} data rows "
                                      "(QUEUE_CSV_MAX_ROWS): split it, or raise the limit")
            rows.append(_row(header, record, number))
    except csv.Error as exc:
        raise ValidationError(f"the file is not valid CSV at {where(len(rows) + 1)}: {exc} "
                              "(a quote opened and never closed?)") from None
    if not any(row is not None for row in rows):
        raise ValidationError("the file has a header row but no data rows")
    return header, rows


def _check_header(header: list[str]) -> None:
    if not any(name.strip() for name in header):
        raise ValidationError("the first line of the file (the header row) is blank: it must "
                              "name the columns, e.g. 'query'")
    seen = set()
    for name in header:
        if name in seen:
            raise ValidationError(f"column name {name!r} appears twice in the header row; "
                                  "every column needs its own name")
        seen.add(name)


def _row(header: list[str], record: list[str], number: int) -> dict[str, str] | None:
    if not record:   # an empty line, skipped as pandas does; a row of empty cells is not
        return None
    if len(record) > len(header) and any(cell.strip() for cell in record[len(header):]):
        raise ValidationError(f"{where(number)} has {len(record)} cells but the header has "
                              f"{len(header)} columns (a missing quote or an extra comma?)")
    return {name: (record[i] if i < len(record) else "") for i, name in enumerate(header)}


def where(number: int) -> str:
    """How a data row is named in messages: ``data row 3 (spreadsheet row 4)``."""
    return f"data row {number} (spreadsheet row {number + 1})"


def _rows_phrase(numbers: Sequence[int]) -> str:
    head = numbers[:_SHOWN_ROWS]
    more = f" and {len(numbers) - len(head):,} more" if len(numbers) > len(head) else ""
    s = "s" if len(numbers) > 1 else ""
    return (f"data row{s} {', '.join(map(str, head))}{more} "
            f"(spreadsheet row{s} {', '.join(str(n + 1) for n in head)}{', ...' if more else ''})")


def _find_column(columns: list[str], wanted: str) -> str:
    if wanted in columns:
        return wanted
    loose = [c for c in columns if c.strip().lower() == str(wanted).strip().lower()]
    if len(loose) == 1:   # " Query" for "query": what the user meant
        return loose[0]
    present = ", ".join(repr(c) for c in columns)
    raise ValidationError(f"the file has no column {wanted!r}; its columns are: {present}. "
                          "Name the column of queries with query_column=...")


def _queries(rows: list[dict[str, str] | None], column: str) -> list[str]:
    blank, too_long = [], []
    for number, row in enumerate(rows, 1):
        if row is None:
            continue
        query = row[column]
        if not query.strip():
            blank.append(number)
        elif len(query) > MAX_QUERY_CHARS:
            too_long.append(number)
    if blank:
        raise ValidationError(f"blank query in column {column!r} at {_rows_phrase(blank)}: "
                              "fill them in or delete those rows")
    if too_long:
        raise ValidationError(f"query over {MAX_QUERY_CHARS:,} characters at {_rows_phrase(too_long)}")
    return [row[column] for row in rows if row is not None]


# -- submitting -----------------------------------------------------------------------------
def _children(parent: Task, queries: list[str], rows: list[dict[str, str] | None],
              limit: int) -> list[Task]:
    children = child_tasks(parent, queries)
    kept = [(number, row) for number, row in enumerate(rows, 1) if row is not None]
    for child, (number, row) in zip(children, kept):
        child.payload["row"] = row
        try:
            dumps(child.payload, "payload", limit)
        except PayloadTooLarge:
            raise ValidationError(f"{where(number)} is too large for one task (over "
                                  f"QUEUE_MAX_PAYLOAD_BYTES = {limit:,} bytes)") from None
    return children


# -- exporting ------------------------------------------------------------------------------
def _result_names(columns: Sequence[str]) -> list[str]:
    return [f"queue_{name}" if name in columns else name for name in RESULT_COLUMNS]


def _rows_with_outcomes(queue: TaskQueue, batch_id: str) -> Iterable[tuple[dict, dict]]:
    for record in child_records(queue, batch_id):
        payload, item = record[3], child_item(*record)
        yield payload.get("row") or {"query": item["query"] or ""}, item


def _dollars(cost: float | None) -> str:
    """A cost as a plain decimal (no exponent, which some spreadsheets read as text)."""
    return "" if cost is None else (f"{cost:.9f}".rstrip("0").rstrip(".") or "0")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def _untrusted(value: Any) -> Any:
    """A cell the model or provider wrote. A spreadsheet would run an answer such as
    "=HYPERLINK(...)" as a formula; a leading apostrophe makes it text (OWASP's advice).
    The user's own input cells are written back as they came."""
    value = _cell(value)
    if isinstance(value, str) and value[:1] in FORMULA_STARTS:
        return "'" + value
    return value


def _write(text: str, target: Any) -> str | None:
    if target is None:
        return text
    if isinstance(target, (str, os.PathLike)):
        with open(target, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        return None
    try:
        target.write(text)
    except TypeError:   # a binary file
        target.write(text.encode("utf-8"))
    return None


def _default_queue() -> TaskQueue:
    return get_task_queue()
