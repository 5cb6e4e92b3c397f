"""A broken record never takes a console page, and no text from a task or a URL is drawn
as markup.

Corrupt records are written straight into Redis (HSET with bad values, a key of the wrong
type, an id in an index with no record, an event that is not JSON): the engine's reads
hand each back marked ``corrupt`` instead of raising, and every page, rendered with
Streamlit's AppTest, draws with the corrupt row shown as corrupt, by its id.
"""
from __future__ import annotations

import re

import pytest
from streamlit.testing.v1 import AppTest

from console import data
from console.testing import (APP, PAGE_FILES, ROOT, markup_in, page_exceptions, plain_texts,
                             table)
from engine import AgentTask

TIMEOUT = 30
NOW_MS = 1_800_000_000_000
INJECTED = "**[Session expired: sign in again](https://evil.example/login)**"
# The same, closing the code span the console used to put an id in.
INJECTED_PAST_CODE = f"x` {INJECTED} `x"


def good_fields(**changes: str) -> dict[str, str]:
    """The fields of a plain pending task as submit.lua writes them, with ``changes``."""
    fields = {"type": "agent_query", "priority": "5", "status": "pending",
              "payload": '{"query": "fine"}', "max_retries": "3", "created_at": str(NOW_MS),
              "attempt": "0", "fence": "0"}
    fields.update(changes)
    return fields


def plant(queue, task_id: str, fields: dict[str, str] | None, status: str = "pending",
          score: float = NOW_MS) -> str:
    """Write a task hash (``None``: none at all) and index it under ``status``."""
    client = queue.client
    if fields is not None:
        client.hset(queue.keys.task(task_id), mapping=fields)
    client.zadd(queue.keys.status[status], {task_id: score})
    return task_id


CORRUPTIONS = {
    # id: (fields, status index, the field the engine reports as corrupt)
    "bad-payload": (good_fields(payload="{not json"), "pending", "payload"),
    "bad-priority": (good_fields(priority="urgentish"), "pending", "priority"),
    "huge-priority": (good_fields(priority="99"), "pending", "priority"),
    "bad-attempt": (good_fields(attempt="xyz"), "running", "attempt"),
    "bad-created": (good_fields(created_at="yesterday"), "pending", "created_at"),
    "far-future": (good_fields(status="scheduled", due_at=str(10**15)), "scheduled", "due_at"),
    "bad-retries": (good_fields(max_retries="lots"), "failed", "max_retries"),
    "bad-duration": (good_fields(status="completed", duration_ms="fast"), "completed",
                     "duration_ms"),
}


@pytest.fixture
def corrupt_queue(queue):
    """One good task, and one task per kind of damage, all in the indexes."""
    good = queue.submit_task(AgentTask({"query": "a healthy task"}))
    for task_id, (fields, status, _) in CORRUPTIONS.items():
        plant(queue, task_id, fields, status)
    # A task due in the year 33715 (delay=1e12 s), in the scheduled set too.
    queue.client.zadd(queue.keys.scheduled, {"far-future": 10**15})
    # A key of the wrong type where a task hash should be.
    queue.client.set(queue.keys.task("wrong-type"), "not a hash")
    plant(queue, "wrong-type", None, "pending")
    # An id in an index with no record at all.
    plant(queue, "ghost", None, "pending")
    # An id with a double quote, and an event that is not JSON.
    plant(queue, 'quote"id', good_fields(), "pending")
    queue.client.xadd(queue.keys.events_log, {"e": '{"type": "task.submitted", "data": {"task_id": "quote"id"}}'})
    queue.client.xadd(queue.keys.events_log, {"e": '["not an object"]'})
    queue.client.xadd(queue.keys.events_log, {"e": '{"type": "task.failed", "data": "text",'
                                                    ' "ts": 1}'})
    return good


# -- the engine's reads -------------------------------------------------------------------------
@pytest.mark.parametrize("task_id", list(CORRUPTIONS))
def test_get_task_marks_the_corrupt_field_and_keeps_the_rest(queue, corrupt_queue, task_id):
    record = queue.get_task(task_id)
    assert record["task_id"] == task_id
    assert CORRUPTIONS[task_id][2] in record["corrupt"]
    assert record["task_type"] == "agent_query"          # what could be read is there


def test_get_task_of_a_wrong_type_key_is_a_corrupt_record(queue, corrupt_queue):
    record = queue.get_task("wrong-type")
    assert record["task_id"] == "wrong-type" and record["corrupt"] == ["record"]
    assert queue.get_task("ghost") is None
    assert queue.get_task(corrupt_queue).get("corrupt") is None   # a good one is not marked


def test_searches_and_status_reads_never_raise_on_corrupt_records(queue, corrupt_queue):
    everything = queue.search_tasks(limit=50)
    by_id = {r["task_id"]: r for r in everything["tasks"]}
    assert set(CORRUPTIONS) | {"wrong-type", 'quote"id', corrupt_queue} <= set(by_id)
    assert "ghost" not in by_id                          # no record: nothing to show
    assert by_id["wrong-type"]["corrupt"] == ["record"]
    assert queue.search_tasks(text="fine", limit=50)["total"] >= 1
    assert queue.search_tasks(priority="normal", limit=50)["total"] >= 1
    statuses = queue.get_task_statuses(["wrong-type", "bad-attempt", "ghost"])
    assert statuses[0]["corrupt"] == ["record"] and "attempt" in statuses[1]["corrupt"]
    assert statuses[2] is None
    assert queue.get_task_status("wrong-type")["corrupt"] == ["record"]
    scheduled = queue.list_scheduled(limit=10)
    assert [r["task_id"] for r in scheduled] == ["far-future"]
    assert "due_at" in scheduled[0]["corrupt"]
    queue.client.zadd(queue.keys.status["failed"], {"wrong-type": NOW_MS})
    assert sum(g["count"] for g in queue.failed_task_groups()) >= 1


def test_console_data_layer_shows_corrupt_rows_by_id(queue, corrupt_queue):
    page = data.load_task_page(queue, data.TaskFilters(), 0, 50)
    frame = data.tasks_frame(page.records)
    corrupt = frame[frame["Status"].str.contains("corrupt")]
    assert set(corrupt["Task id"]) == set(CORRUPTIONS) | {"wrong-type"}
    scheduled = data.scheduled_frame(queue.list_scheduled(limit=10), NOW_MS)
    assert scheduled["Task id"].tolist() == ["far-future"]
    for task_id in [*CORRUPTIONS, "wrong-type"]:
        data.task_timeline(queue, queue.get_task(task_id))
    # An id from before ids were checked: the table's record still has a timeline.
    quoted = next(r for r in page.records if r["task_id"] == 'quote"id')
    assert data.task_timeline(queue, quoted)["What"].tolist() == ["created"]
    found = data.load_task_page(queue, data.TaskFilters(search="bad-payload"), 0, 50)
    assert found.exact_id == "bad-payload"


# -- every page ---------------------------------------------------------------------------------
def test_every_page_draws_over_corrupt_records(redis_url, namespace, corrupt_queue):
    problems = page_exceptions(redis_url, namespace,
                               task_ids=[*CORRUPTIONS, "wrong-type", "ghost", 'quote"id'])
    assert problems == []


def test_a_corrupt_task_opened_in_tasks_says_corrupt_with_its_id(console_env, corrupt_queue):
    at = AppTest.from_file(str(ROOT / PAGE_FILES["Tasks"]), default_timeout=TIMEOUT)
    at.query_params["task"] = "bad-payload"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = plain_texts(at)
    assert "bad-payload" in shown and "corrupt" in shown and "payload" in shown
    rows = table(at, "tasks_table")
    assert rows.loc[rows["Task id"] == "wrong-type", "Status"].tolist() == ["● corrupt"]


def test_page_exceptions_reports_a_page_that_fails(redis_url, namespace, queue, monkeypatch):
    """The helper itself finds a failure (so an empty list means something)."""
    queue.submit_task(AgentTask({"query": "x"}))

    def broken(*args, **kwargs):
        raise RuntimeError("boom in the data layer")
    monkeypatch.setattr("console.views.overview.load_overview", broken)
    problems = page_exceptions(redis_url, namespace)
    assert any(p.startswith("Overview:") and "boom in the data layer" in p for p in problems), problems


# -- text from a URL or a record is text ---------------------------------------------------------
def markdown_sources(at: AppTest) -> list[str]:
    """The Markdown source of every element that Streamlit draws as Markdown."""
    out = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "success",
                 "warning", "error", "toast"):
        out.extend(str(getattr(node, "value", "")) for node in at.get(kind))
    for kind in ("expander", "tab", "metric"):
        out.extend(str(getattr(node, "label", "")) for node in at.get(kind))
    return out


def assert_drawn_as_text(at: AppTest, injected: str) -> None:
    sources = "\n".join(markdown_sources(at))
    for link_text, target in markup_in(sources)["links"]:
        assert "evil.example" not in target, (link_text, target)
    for bold in markup_in(sources)["bold"]:
        assert "Session expired" not in bold, bold


def test_markup_in_finds_links_and_bold_unless_escaped():
    found = markup_in("see " + INJECTED)
    assert found["links"] == [("Session expired: sign in again", "https://evil.example/login")]
    assert found["bold"] and "Session expired" in found["bold"][0]
    from console.text import md
    assert markup_in("see " + md(INJECTED)) == {"links": [], "bold": []}


@pytest.mark.parametrize("injected", [INJECTED, INJECTED_PAST_CODE])
def test_a_url_with_markdown_draws_as_text(console_env, queue, injected):
    at = AppTest.from_file(str(ROOT / PAGE_FILES["Tasks"]), default_timeout=TIMEOUT)
    at.query_params["task"] = injected
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Session expired" in plain_texts(at)                 # said, as text
    assert_drawn_as_text(at, injected)


def test_a_task_id_and_type_with_markdown_draw_as_text(console_env, queue):
    task_id = "**bold**[link](https://evil.example/login)"
    plant(queue, task_id, good_fields(type="[Session expired: sign in again](https://evil.example/login)",
                                      error="**Session expired** [sign in](https://evil.example/login)"))
    queue.client.xadd(queue.keys.events_log, {"e": '{"type": "task.submitted", "data": {"task_id": '
                                                    '"**bold**[link](https://evil.example/login)"}}'})
    for page in ("Overview", "Events", "Tasks"):
        at = AppTest.from_file(str(APP if page == "Overview" else ROOT / PAGE_FILES[page]),
                               default_timeout=TIMEOUT)
        if page == "Tasks":
            at.query_params["task"] = task_id
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert_drawn_as_text(at, task_id)
    assert "**bold**[link](https://evil.example/login)" in plain_texts(at)   # as text


def test_the_submit_flash_and_batch_label_draw_as_text(console_env, queue):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page(PAGE_FILES["Submit"]).run()
    csv = b"query\nWhat is Redis?\n"
    name = "**[Session expired](https://evil.example/login)**.csv"
    at.file_uploader(key="submit_csv_file_0").set_value((name, csv, "text/csv")).run()
    [b for b in at.button if b.label == "Submit CSV batch"][0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert re.search(r"Submitted batch", plain_texts(at))
    assert_drawn_as_text(at, name)
