"""CSV jobs: ``engine.batch.submit_csv`` and ``engine.batch.export_results_csv``."""
from __future__ import annotations

import csv
import io

import pandas as pd
import pytest

from engine import PermanentError, Settings, Task, TaskNotFound, TaskQueue, TaskType, ValidationError
from engine.batch import batch_progress, child_ids, export_results_csv, submit_csv
from engine.connection import connect
from tests.fixtures_engine import TEST_SETTINGS

QUESTIONS = "id,query,topic\n1,What is Redis?,db\n2,What is a task queue?,infra\n3,bad question,misc\n"


def answer(task):
    query = task.payload["query"]
    if query.startswith("bad"):
        raise PermanentError(f"cannot answer {query!r}")
    return {"answer": f"A: {query}", "backend": "test", "model": "test", "usage": {}}


@pytest.fixture
def run_all(make_worker):
    """Run every pending task with the stand-in agent above."""
    def run(queue=None) -> None:
        worker = make_worker(**({"queue": queue} if queue else {}))
        worker.register_handler(TaskType.AGENT_QUERY, answer)
        while worker.process_one():
            pass
    return run


def read(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def no_keys(queue: TaskQueue) -> bool:
    return queue.client.keys("{%s}:*" % queue.namespace) == []


def limited_queue(redis_url: str, namespace: str, **env: str) -> TaskQueue:
    settings = Settings.from_mapping(env, **TEST_SETTINGS)
    return TaskQueue(connect(redis_url), settings=settings, namespace=namespace)


# -- the round trip ------------------------------------------------------------------------------
def test_rows_in_answers_out(queue, run_all):
    batch_id = submit_csv(QUESTIONS.encode(), queue=queue, max_retries=0)
    children = [queue.get_task(i) for i in child_ids(queue, batch_id)]
    assert [c["payload"]["row"] for c in children] == [
        {"id": "1", "query": "What is Redis?", "topic": "db"},
        {"id": "2", "query": "What is a task queue?", "topic": "infra"},
        {"id": "3", "query": "bad question", "topic": "misc"}]
    assert {c["priority"] for c in children} == {"low"}
    run_all()
    rows = read(export_results_csv(batch_id, queue=queue))
    assert list(rows[0]) == ["id", "query", "topic", "answer", "status", "error", "duration",
                             "tokens", "cost"]
    assert [(r["id"], r["answer"], r["status"]) for r in rows] == [
        ("1", "A: What is Redis?", "completed"), ("2", "A: What is a task queue?", "completed"),
        ("3", "", "failed")]
    assert "cannot answer 'bad question'" in rows[2]["error"]
    assert rows[0]["error"] == "" and float(rows[0]["duration"]) >= 0


@pytest.mark.parametrize("kind", ["path", "str path", "bytes", "binary file", "text file", "dataframe"])
def test_every_kind_of_file_is_accepted(queue, tmp_path, kind):
    path = tmp_path / "questions.csv"
    path.write_text(QUESTIONS, encoding="utf-8")
    source = {"path": path, "str path": str(path), "bytes": QUESTIONS.encode(),
              "binary file": io.BytesIO(QUESTIONS.encode()), "text file": io.StringIO(QUESTIONS),
              "dataframe": pd.read_csv(io.StringIO(QUESTIONS))}[kind]
    batch_id = submit_csv(source, queue=queue)
    assert batch_progress(queue, batch_id)["total"] == 3
    assert [queue.get_task(i)["payload"]["query"] for i in child_ids(queue, batch_id)] == [
        "What is Redis?", "What is a task queue?", "bad question"]


def test_the_guides_pandas_example_done_for_the_user(queue, run_all, tmp_path):
    pd.DataFrame({"query": ["What is Redis?", "Explain queues"], "owner": ["ann", "bob"]}).to_csv(
        tmp_path / "in.csv", index=False)
    batch_id = submit_csv(tmp_path / "in.csv", queue=queue)
    run_all()
    assert export_results_csv(batch_id, queue=queue, path_or_buffer=tmp_path / "out.csv") is None
    frame = pd.read_csv(tmp_path / "out.csv")
    assert list(frame.columns) == ["query", "owner", "answer", "status", "error", "duration",
                                   "tokens", "cost"]
    assert frame["answer"].tolist() == ["A: What is Redis?", "A: Explain queues"]
    assert frame["owner"].tolist() == ["ann", "bob"]


def test_export_to_a_text_or_binary_buffer(queue, run_all):
    batch_id = submit_csv(QUESTIONS.encode(), queue=queue)
    run_all()
    text, binary = io.StringIO(), io.BytesIO()
    assert export_results_csv(batch_id, queue=queue, path_or_buffer=text) is None
    assert export_results_csv(batch_id, queue=queue, path_or_buffer=binary) is None
    assert binary.getvalue().decode("utf-8") == text.getvalue() == export_results_csv(batch_id, queue=queue)


def test_export_while_the_batch_runs_shows_each_rows_status(queue, make_worker):
    batch_id = submit_csv(QUESTIONS.encode(), queue=queue)
    worker = make_worker()
    worker.register_handler(TaskType.AGENT_QUERY, answer)
    worker.process_one()
    rows = read(export_results_csv(batch_id, queue=queue))
    assert [r["status"] for r in rows] == ["completed", "pending", "pending"]
    assert [r["answer"] for r in rows] == ["A: What is Redis?", "", ""]
    assert rows[1]["duration"] == ""


def test_awkward_cells_survive_the_round_trip(queue, run_all):
    source = ('query,note\n"What is ""Redis""?","a, b"\n"two\nlines",é ü 漢字\n\nlast,\n').encode()
    batch_id = submit_csv(source, queue=queue)
    run_all()
    rows = read(export_results_csv(batch_id, queue=queue))
    assert [(r["query"], r["note"]) for r in rows] == [
        ('What is "Redis"?', "a, b"), ("two\nlines", "é ü 漢字"), ("last", "")]
    assert rows[1]["answer"] == "A: two\nlines"


def test_added_columns_never_overwrite_input_columns(queue, run_all):
    batch_id = submit_csv(b"query,status,answer\nq1,draft,my guess\n", queue=queue)
    run_all()
    [row] = read(export_results_csv(batch_id, queue=queue))
    assert row == {"query": "q1", "status": "draft", "answer": "my guess", "queue_answer": "A: q1",
                   "queue_status": "completed", "error": "", "duration": row["duration"],
                   "tokens": "", "cost": ""}


def test_a_plain_batch_exports_its_queries(queue, run_all):
    batch_id = queue.submit_task(Task(task_type=TaskType.BATCH_QUERY, payload={"queries": ["x", "y"]}))
    run_all()
    assert [(r["query"], r["answer"]) for r in read(export_results_csv(batch_id, queue=queue))] == [
        ("x", "A: x"), ("y", "A: y")]


def test_export_names_a_missing_or_wrong_batch(queue):
    with pytest.raises(TaskNotFound, match="batch nope not found"):
        export_results_csv("nope", queue=queue)
    single = queue.submit_task(Task(task_type="custom", payload={}))
    with pytest.raises(ValidationError, match="not a batch"):
        export_results_csv(single, queue=queue)


def test_query_column_and_task_options(queue):
    batch_id = submit_csv(b"Question,n\nWhy?,1\n", query_column=" question ", queue=queue,
                          priority="high", max_retries=7, timeout=30, idempotency_key="upload-42")
    [child] = [queue.get_task(i) for i in child_ids(queue, batch_id)]
    assert child["payload"]["query"] == "Why?" and child["priority"] == "high"
    assert child["max_retries"] == 7
    again = submit_csv(b"Question,n\nWhy?,1\n", query_column="Question", queue=queue,
                       idempotency_key="upload-42")
    assert again == batch_id and len(child_ids(queue, batch_id)) == 1


# -- rejected files: a clear message, and nothing written ---------------------------------------
@pytest.mark.parametrize("data, match", [
    (b"", "the file is empty"),
    (b"  \n\n", "the file is empty"),
    (b"query\n", "header row but no data rows"),
    ("query\nCafé crème?\n".encode("latin-1"), r"not UTF-8 text: byte 0xE9 on line 2"),
    ("query\nq\n".encode("utf-16"), "UTF-16"),
    (b"question,id\nq,1\n", r"no column 'query'; its columns are: 'question', 'id'"),
    (b"id,query\n1,first\n2,\n3,third\n4,   \n", r"blank query in column 'query' at data rows 2, 4 "
                                                 r"\(spreadsheet rows 3, 5\)"),
    (b"query\n,\n", r"data row 1 \(spreadsheet row 2\)"),
    (b"id,query\n1,a\n2,b,extra\n", r"data row 2 \(spreadsheet row 3\) has 3 cells but the header has 2"),
    (b"query,query\na,b\n", "appears twice"),
    (b"\nquery\na\n", "header row\\) is blank"),
    (b'query\nfine\n"unterminated\nnext\n', r"not valid CSV at data row 2 \(spreadsheet row 3\): unexpected end"),
    (b'query\n"quoted"trailing\n', r"not valid CSV at data row 1"),
])
def test_a_rejected_file_says_why_and_writes_nothing(queue, data, match):
    with pytest.raises(ValidationError, match=match) as caught:
        submit_csv(data, queue=queue)
    assert str(caught.value)
    assert no_keys(queue)


def test_the_size_limit(redis_url, namespace, tmp_path):
    queue = limited_queue(redis_url, namespace, QUEUE_CSV_MAX_BYTES="64")
    big = b"query\n" + b"What is Redis?\n" * 10
    (tmp_path / "big.csv").write_bytes(big)
    for source in (big, tmp_path / "big.csv", io.BytesIO(big), io.StringIO(big.decode())):
        with pytest.raises(ValidationError, match=r"over the size limit of 64 bytes \(QUEUE_CSV_MAX_BYTES\)"):
            submit_csv(source, queue=queue)
    assert no_keys(queue)
    submit_csv(b"query\nsmall\n", queue=queue)


def test_the_row_limit(redis_url, namespace):
    queue = limited_queue(redis_url, namespace, QUEUE_CSV_MAX_ROWS="3")
    with pytest.raises(ValidationError, match=r"more than 3 data rows \(QUEUE_CSV_MAX_ROWS\)"):
        submit_csv(b"query\na\nb\nc\nd\n", queue=queue)
    assert no_keys(queue)
    assert batch_progress(queue, submit_csv(b"query\na\nb\nc\n", queue=queue))["total"] == 3


def test_a_row_too_large_for_one_task_is_named(redis_url, namespace):
    queue = limited_queue(redis_url, namespace, QUEUE_MAX_PAYLOAD_BYTES="2000")
    data = b"query,notes\nshort,x\nlong," + b"y" * 3000 + b"\n"
    with pytest.raises(ValidationError, match=r"data row 2 \(spreadsheet row 3\) is too large"):
        submit_csv(data, queue=queue)
    assert no_keys(queue)


def test_other_bad_arguments(queue, tmp_path):
    with pytest.raises(ValidationError, match="no such file"):
        submit_csv(tmp_path / "missing.csv", queue=queue)
    with pytest.raises(ValidationError, match="path, bytes or an open file"):
        submit_csv(12, queue=queue)
    with pytest.raises(ValidationError, match="not payload or task_type"):
        submit_csv(QUESTIONS.encode(), queue=queue, payload={})
    assert no_keys(queue)


def test_answers_that_look_like_formulas_are_exported_as_text(queue, make_worker):
    batch_id = submit_csv(b"query\n=1+1\nplain\n", queue=queue)
    worker = make_worker()
    worker.register_handler(TaskType.AGENT_QUERY, lambda t: {"answer": "=HYPERLINK(\"x\")"
                                                             if t.payload["query"] == "=1+1" else "ok"})
    worker.start(burst=True)
    rows = read(export_results_csv(batch_id, queue=queue))
    assert [r["query"] for r in rows] == ["=1+1", "plain"]       # the user's own cells as given
    assert [r["answer"] for r in rows] == ["'=HYPERLINK(\"x\")", "ok"]


def test_each_rows_tokens_and_cost_are_exported(queue, run_all):
    batch_id = submit_csv(QUESTIONS.encode(), queue=queue)
    run_all()
    first, second, _ = child_ids(queue, batch_id)
    # 1,000 prompt and 500 completion tokens at $0.15 / $0.60 per million: $0.00045.
    queue.store.usage([(first, "gpt-4o-mini", 1000, 500, 1500, 450_000),
                       (second, "llama3", 20, 10, 30, None)])
    rows = read(export_results_csv(batch_id, queue=queue))
    assert [(r["tokens"], r["cost"]) for r in rows] == [("1500", "0.00045"), ("30", ""), ("", "")]
