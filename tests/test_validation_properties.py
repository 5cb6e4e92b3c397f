"""Property: whatever a caller puts in a Task or passes as an id, the engine either refuses
it with a ValidationError and writes nothing, or runs it, and then every JSON document it
stored (the result, the events) is valid strict JSON and the console's rows build.

Values come from wide strategies (NaN, infinities, huge and negative numbers, wrong
types, control characters, lone surrogates, deep nesting, big payloads). The runs are
derandomized, so CI sees the same examples every time, and bounded to stay quick.
"""
from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timezone
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from console.data import TASK_COLUMNS, TaskFilters, load_task_page, task_timeline, tasks_frame
from engine import Settings, Task, TaskNotFound, TaskQueue, TaskWorker, ValidationError
from engine.connection import connect
from engine.serialization import dumps
from tests.fixtures_engine import TEST_SETTINGS
from tests.support.indexes import namespace_keys

PAYLOAD_LIMIT = 4096          # small, so that "over the limit" is reached cheaply
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                    HealthCheck.too_slow,
                                                    HealthCheck.data_too_large])


def nested(depth: int) -> dict:
    """A payload ``depth`` containers deep (the dict itself is depth 1)."""
    value: Any = 1
    for _ in range(depth - 1):
        value = [value]
    return {"deep": value}


# -- strategies ---------------------------------------------------------------------------
ANY_CHAR = st.characters(exclude_categories=())          # lone surrogates and controls too
WILD_TEXT = st.text(ANY_CHAR, max_size=30) | st.sampled_from(
    ["", " ", "\x00", "a\nb", "{x}", "*", "../x", "{agent_queue}:stats", 'a"b', "\ud800",
     "x" * 129, "y" * 300, "é"])
NUMBERS = (st.floats(allow_nan=True, allow_infinity=True)
           | st.integers(min_value=-10 ** 40, max_value=10 ** 40)
           | st.sampled_from([math.nan, math.inf, -math.inf, 1e300, 1e12, -1, 0, 10 ** 30, True]))
WRONG_TYPES = (st.none() | st.booleans() | st.binary(max_size=4) | st.just([1]) | st.just({})
               | st.integers(min_value=1, max_value=1500).map(lambda depth: nested(depth)["deep"]))
WILD = WILD_TEXT | NUMBERS | WRONG_TYPES

ID = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,40}", fullmatch=True)
TYPE_NAME = ID.filter(lambda name: name != "batch_query")     # a batch needs its queries
TEXT = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=40)
SMALL_SECONDS = st.floats(min_value=0, max_value=3600) | st.integers(min_value=0, max_value=3600)
NEAR_TIMES = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2026, 1, 1),
                          timezones=st.none() | st.just(timezone.utc))
WILD_TIMES = st.datetimes(timezones=st.none() | st.just(timezone.utc)) | st.sampled_from(
    [datetime.min, datetime.max, datetime(1, 1, 1, tzinfo=timezone.utc)])

JSON_KEYS = TEXT | WILD_TEXT | st.integers() | st.none()
JSON_LEAVES = (st.none() | st.booleans() | st.integers(min_value=-10 ** 20, max_value=10 ** 20)
               | st.floats(allow_nan=True, allow_infinity=True) | TEXT | WILD_TEXT)
JSON_TREES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(JSON_KEYS, inner, max_size=3), max_leaves=12)


CLEAN_PAYLOADS = st.dictionaries(TEXT, st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8), max_size=4)
WILD_PAYLOADS = (st.dictionaries(JSON_KEYS, JSON_TREES, max_size=4)
                 | st.integers(min_value=1, max_value=2000).map(nested)
                 | st.integers(min_value=0, max_value=2 * PAYLOAD_LIMIT).map(lambda n: {"big": "x" * n})
                 | JSON_TREES | WILD)

# For each field: values that pass, and the wide range to throw at it.
FIELDS: dict[str, tuple[st.SearchStrategy, st.SearchStrategy]] = {
    "task_type": (TYPE_NAME, WILD),
    "payload": (CLEAN_PAYLOADS, WILD_PAYLOADS),
    "priority": (st.sampled_from(["low", "NORMAL", " high ", "urgent", 0, 5, 10, 15]), WILD),
    "max_retries": (st.integers(min_value=0, max_value=5), WILD),
    "retry_delay": (SMALL_SECONDS, WILD),
    "backoff": (st.sampled_from(["fixed", "exponential"]), WILD),
    "max_retry_delay": (SMALL_SECONDS, WILD),
    "session_id": (TEXT, WILD),
    "run_at": (NEAR_TIMES, WILD_TIMES | WILD),
    "delay": (SMALL_SECONDS, WILD),
    "idempotency_key": (TEXT, WILD),
    "timeout": (st.floats(min_value=0.1, max_value=600), WILD),
    "task_id": (ID, WILD),
    "parent_id": (ID, WILD),
}
WORKER_FIELDS = {"worker_id": (ID, WILD), "name": (TEXT, WILD)}


@st.composite
def task_fields(draw) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Task keyword arguments, TaskWorker keyword arguments): a few fields drawn from the
    wide strategies, any others from the values that pass (or left out)."""
    wild = draw(st.sets(st.sampled_from(sorted({**FIELDS, **WORKER_FIELDS})), max_size=3))
    chosen = []
    for table in (FIELDS, WORKER_FIELDS):
        kwargs = {}
        for name, (good, bad) in table.items():
            if name in wild:
                kwargs[name] = draw(bad)
            elif draw(st.booleans()):
                kwargs[name] = draw(good)
        chosen.append(kwargs)
    return chosen[0], chosen[1]


# -- helpers ------------------------------------------------------------------------------
@pytest.fixture
def small_queue(redis_url, namespace, fixed_clock) -> Iterator[TaskQueue]:
    """A queue with a 4 KiB payload limit, on a clock the test moves."""
    client = connect(redis_url)
    settings_ = Settings.from_mapping({}, **TEST_SETTINGS, max_payload_bytes=PAYLOAD_LIMIT)
    yield TaskQueue(client, settings=settings_, namespace=namespace, clock=fixed_clock)
    client.close()


def snapshot(client, namespace: str) -> dict[str, bytes]:
    """Every key of the namespace with its serialized value (DUMP)."""
    return {key: client.dump(key) for key in namespace_keys(client, namespace)}


def strict_json(text: str) -> Any:
    """Parse ``text`` as strict JSON: NaN and Infinity are not JSON."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} in a stored JSON document")
    return json.loads(text, parse_constant=refuse)


def last_event_id(client, key: str) -> str:
    newest = client.xrevrange(key, count=1)
    return newest[0][0] if newest else "0-0"


# -- the properties -------------------------------------------------------------------------
@PROPERTY_SETTINGS
@given(drawn=task_fields())
def test_any_task_is_refused_cleanly_or_runs_to_valid_json(small_queue, redis_client, namespace,
                                                          fixed_clock, drawn):
    queue = small_queue
    fields, worker_fields = drawn
    if isinstance(fields.get("idempotency_key"), str):
        # Keys are remembered across examples: a unique tail keeps one example from
        # answering another's (the drawn part still carries whatever is being tried).
        fields["idempotency_key"] += ":" + uuid.uuid4().hex
    before = snapshot(redis_client, namespace)
    events_before = last_event_id(redis_client, queue.keys.events_log)
    try:
        task = Task(**fields)
        worker = TaskWorker(queue, **worker_fields, handlers={task.type_name: lambda t: t.payload})
        task_id = queue.submit_task(task)
    except ValidationError as exc:
        assert snapshot(redis_client, namespace) == before, "a refused submit wrote to Redis"
        event(f"refused: {str(exc).split()[0]}")
        return
    event("ran")
    try:
        run_to_the_end(queue, worker, fixed_clock, task_id)
        check_result(queue, redis_client, task, task_id, worker.worker_id)
        check_events(queue, redis_client, task_id, events_before)
        check_console_rows(queue, task, task_id)
    finally:
        queue.delete_task(task_id)     # an id drawn again by a later example starts afresh


def run_to_the_end(queue: TaskQueue, worker: TaskWorker, fixed_clock, task_id: str) -> None:
    if queue.get_task_status(task_id)["status"] == "scheduled":
        fixed_clock.advance(400 * 86400)           # past any due time a task may have
    for _ in range(3):
        worker.process_one()
        if queue.get_task_status(task_id)["status"] == "completed":
            return
    raise AssertionError(f"the task did not complete: {queue.get_task(task_id)}")


def check_result(queue: TaskQueue, client, task: Task, task_id: str, worker_id: str) -> None:
    doc = strict_json(client.get(queue.keys.result(task_id)))
    assert doc["task_id"] == task_id and doc["status"] == "completed"
    assert doc["worker_id"] == worker_id
    assert doc["result"] == json.loads(dumps(task.payload))
    assert queue.get_task_result(task_id) == doc


def check_events(queue: TaskQueue, client, task_id: str, after: str) -> None:
    entries = client.xrange(queue.keys.events_log, min="(" + after)
    for _, fields in entries:
        strict_json(fields["e"])
    mine = [e for e in queue.read_events(after=after, count=1000)
            if e["data"].get("task_id") == task_id]
    assert {"task.submitted", "task.completed"} <= {e["type"] for e in mine}


def check_console_rows(queue: TaskQueue, task: Task, task_id: str) -> None:
    page = load_task_page(queue, TaskFilters(search=task_id))
    assert page.ids == [task_id]
    frame = tasks_frame(page.records)
    assert list(frame.columns) == TASK_COLUMNS and frame.iloc[0]["Task id"] == task_id
    strict_json(frame.to_json(orient="records", date_format="iso"))
    strict_json(task_timeline(queue, page.records[0]).to_json(orient="records", date_format="iso"))
    filtered = load_task_page(queue, TaskFilters(task_type=task.type_name,
                                                 session_id=task.session_id or None))
    assert task_id in filtered.ids


@PROPERTY_SETTINGS
@given(task_id=WILD | ID)
def test_any_id_given_to_a_verb_is_refused_cleanly_or_answered(queue, redis_client, namespace,
                                                              task_id):
    before = snapshot(redis_client, namespace)
    for verb in ("get_task", "get_task_status", "get_task_result", "cancel_task",
                 "retry_task", "requeue_task", "delete_task"):
        try:
            answer = getattr(queue, verb)(task_id)
        except ValidationError:
            continue
        except TaskNotFound:
            continue
        assert answer in (None, False), (verb, answer)   # no such task: nothing to find
    assert snapshot(redis_client, namespace) == before
