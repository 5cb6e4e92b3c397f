"""The public boundary: every Task field and every id is checked before anything is written.

Each case below was accepted (and broke a worker, a record or the console later) or was
refused with a raw Python error (RecursionError, UnicodeEncodeError, OverflowError,
TypeError, "year 0 is out of range") before the checks of engine/validation.py. Each
refusal must be a ValidationError that names the field, and must leave Redis untouched.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone, tzinfo

import pytest

from engine import (RetryableError, Task, TaskNotFound, TaskPriority, TaskWorker,
                    ValidationError)
from engine.models import RunningTask
from tests.support.indexes import namespace_keys

DAY = 86400
BAD_IDS = ["", "*", "../x", "{agent_queue}:stats", "x" * 1_000_000, 42, 'a"b', None,
           "a b", "a\nb", "a\x00b", "é", "-x", ".", "..", "x" * 129, b"abc"]


@pytest.fixture
def untouched(queue, redis_client, namespace):
    """Call ``untouched()`` after a refusal: asserts no key of the namespace changed since
    the fixture was set up (one task is submitted first, so the namespace is not empty)."""
    queue.submit_task(Task(task_type="seed"))
    before = {key: redis_client.dump(key) for key in namespace_keys(redis_client, namespace)}

    def check() -> None:
        after = {key: redis_client.dump(key) for key in namespace_keys(redis_client, namespace)}
        assert after == before, "a refused call wrote to Redis"
    return check


def refused(field: str, call, *args, **kwargs) -> ValidationError:
    """Assert ``call`` raises ValidationError naming ``field``; return it."""
    with pytest.raises(ValidationError) as info:
        call(*args, **kwargs)
    assert field in str(info.value), f"{field!r} not named in {info.value}"
    assert len(str(info.value)) < 1000, "the message quotes too much of the input"
    return info.value


# -- numbers ------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value"), [
    ("delay", 1e300), ("delay", 1e12), ("delay", math.inf), ("delay", math.nan), ("delay", -1),
    ("delay", True), ("delay", "5"), ("delay", 366 * DAY + 1),
    ("max_retries", 10 ** 30), ("max_retries", 1001), ("max_retries", -1), ("max_retries", 2.0),
    ("timeout", "abc"), ("timeout", math.nan), ("timeout", -1), ("timeout", 0),
    ("timeout", math.inf), ("timeout", 7 * DAY + 1), ("timeout", [30]),
    ("retry_delay", math.inf), ("retry_delay", math.nan), ("retry_delay", 1e300),
    ("max_retry_delay", math.inf), ("max_retry_delay", None), ("max_retry_delay", -5),
    ("priority", 10 ** 30), ("priority", math.nan), ("priority", "9" * 5000),
])
def test_out_of_bounds_numbers_are_refused_naming_the_field(queue, untouched, field, value):
    refused(field, lambda: queue.submit_task(Task(task_type="probe", **{field: value})))
    untouched()


@pytest.mark.parametrize(("field", "value"), [
    ("delay", 1e300), ("delay", math.inf), ("max_retries", 10 ** 30), ("timeout", "abc"),
    ("timeout", math.nan), ("retry_delay", math.inf), ("max_retry_delay", 1e300),
    ("run_at", datetime.min), ("task_id", 'a"b'), ("task_id", "*"), ("parent_id", "../x"),
    ("session_id", "s\x00"), ("idempotency_key", "k\ud800"), ("priority", "asap"),
    ("task_type", "a{b}"), ("backoff", "linear"), ("payload", [1]),
])
def test_a_task_changed_after_it_was_built_is_checked_again_at_submit(queue, untouched,
                                                                     field, value):
    task = Task(task_type="probe")
    setattr(task, field, value)
    refused(field, queue.submit_task, task)
    good = Task(task_type="probe")
    refused(field, queue.submit_tasks, [good, task])     # the good one is not written either
    untouched()


def test_limits_themselves_are_accepted(queue):
    """The documented bounds are inclusive: the edge values submit."""
    from engine.validation import MAX_DELAY_SECONDS, MAX_RETRIES, MAX_TIMEOUT_SECONDS
    ids = queue.submit_tasks([
        Task(task_type="edge", delay=MAX_DELAY_SECONDS), Task(task_type="edge", delay=0),
        Task(task_type="edge", max_retries=MAX_RETRIES), Task(task_type="edge", max_retries=0),
        Task(task_type="edge", timeout=MAX_TIMEOUT_SECONDS), Task(task_type="edge", timeout=0.5),
        Task(task_type="edge", retry_delay=MAX_DELAY_SECONDS, max_retry_delay=MAX_DELAY_SECONDS),
        Task(task_type="edge", task_id="a" * 128), Task(task_type="b" * 128),
    ])
    assert [queue.get_task_status(i)["status"] for i in ids] == ["scheduled", "pending"] + ["pending"] * 7


def test_a_delay_is_stored_as_a_due_time_that_far_ahead(clocked_queue, fixed_clock, redis_client):
    """The largest delay allowed is stored exactly (a larger one, such as 1e300, is
    refused above: it used to be stored as a negative due time and ran at once)."""
    task_id = clocked_queue.submit_task(Task(task_type="later", delay=366 * DAY))
    due = redis_client.zscore(clocked_queue.keys.scheduled, task_id)
    assert due == fixed_clock.ms + 366 * DAY * 1000


# -- times --------------------------------------------------------------------------------

class NonsenseZone(tzinfo):
    """A tzinfo whose offset is not a timedelta."""

    def utcoffset(self, moment):
        return "two hours"


@pytest.mark.parametrize("run_at", [
    datetime.min, datetime.max, datetime(1, 1, 1, tzinfo=timezone.utc),
    datetime(1969, 12, 31, tzinfo=timezone.utc), datetime.now(timezone.utc) + timedelta(days=367),
    datetime(2026, 1, 1, tzinfo=NonsenseZone()), "tomorrow", 1_800_000_000,
])
def test_run_at_out_of_range_is_refused_not_a_year_0_error(queue, untouched, run_at):
    refused("run_at", lambda: queue.submit_task(Task(task_type="probe", run_at=run_at)))
    untouched()


def test_run_at_in_the_past_still_runs_now(queue):
    task_id = queue.submit_task(Task(task_type="probe", run_at=datetime(2001, 1, 1)))
    assert queue.get_task_status(task_id)["status"] == "pending"


# -- ids and names ----------------------------------------------------------------------------

@pytest.mark.parametrize("task_id", BAD_IDS, ids=repr)
def test_malformed_task_ids_are_refused_at_submit(queue, untouched, task_id):
    refused("task_id", lambda: queue.submit_task(Task(task_type="probe", task_id=task_id)))
    untouched()


@pytest.mark.parametrize("parent_id", ["", "*", "{agent_queue}:stats", 'a"b', 7])
def test_malformed_parent_ids_are_refused(queue, untouched, parent_id):
    refused("parent_id", lambda: queue.submit_task(Task(task_type="probe", parent_id=parent_id)))
    untouched()


@pytest.mark.parametrize("task_type", ["a\nb", "{x}", "a\x00b", "a b", "x" * 129, "é", "",
                                       "a\ud800", 5, None, "*"], ids=repr)
def test_task_types_with_control_characters_braces_or_nul_are_refused(queue, untouched, task_type):
    refused("task_type", lambda: queue.submit_task(Task(task_type=task_type)))
    untouched()


def test_task_types_and_ids_in_use_are_accepted(queue):
    for name in ("agent_query", "resize", "shout", "noop", "nobody-handles-this", "v2.render",
                 " resize "):
        task_id = queue.submit_task(Task(task_type=name))
        assert queue.get_task_status(task_id)["task_type"] == name.strip()
    for task_id in ("order-42", "a1b2c3", "job:2024.07", "X_y", "0" * 32):
        assert queue.submit_task(Task(task_type="noop", task_id=task_id)) == task_id


@pytest.mark.parametrize(("field", "value"), [
    ("session_id", "s\x00"), ("session_id", "s\n"), ("session_id", "s\ud800"),
    ("session_id", "s" * 201), ("session_id", 5), ("session_id", b"s"),
    ("idempotency_key", "k\x00"), ("idempotency_key", "k\udfff"), ("idempotency_key", "k" * 257),
    ("idempotency_key", 5), ("idempotency_key", ["k"]),
])
def test_text_fields_refuse_control_characters_surrogates_and_size(queue, untouched, field, value):
    refused(field, lambda: queue.submit_task(Task(task_type="probe", **{field: value})))
    untouched()


def test_a_session_id_taken_from_the_payload_is_checked_too(queue, untouched):
    refused("session_id", lambda: queue.submit_task(
        Task(task_type="probe", payload={"session_id": "s\x00"})))
    untouched()


def test_text_fields_accept_unicode_and_spaces(queue):
    task_id = queue.submit_task(Task(task_type="probe", session_id="équipe 7 — ünïcode ✓",
                                     idempotency_key="schedule:daily report:1800000000000"))
    assert queue.get_task(task_id)["session_id"] == "équipe 7 — ünïcode ✓"


@pytest.mark.parametrize("verb", ["get_task", "get_task_status", "get_task_result",
                                  "cancel_task", "retry_task", "requeue_task", "delete_task",
                                  "wait_for_result"])
@pytest.mark.parametrize("task_id", ["", "*", "../x", "{agent_queue}:stats", 42, 'a"b', None,
                                     "x" * 1_000_000], ids=lambda v: repr(v)[:20])
def test_public_verbs_refuse_malformed_ids(queue, untouched, verb, task_id):
    args = (task_id, 0.01) if verb == "wait_for_result" else (task_id,)
    refused("task_id", getattr(queue, verb), *args)
    untouched()


@pytest.mark.parametrize("task_ids", ["abc", ["ok", "*"], [None], 5])
def test_verbs_on_many_ids_refuse_a_malformed_one_or_a_bare_string(queue, untouched, task_ids):
    """A bare string is not a list of ids: delete_tasks("abc") used to delete a, b and c."""
    refused("task_ids", queue.delete_tasks, task_ids)
    refused("task_ids", queue.get_task_statuses, task_ids)
    untouched()


def test_well_formed_unknown_ids_keep_their_answers(queue):
    unknown = "0123456789abcdef0123456789abcdef"
    assert queue.get_task(unknown) is None
    assert queue.get_task_status(unknown) is None
    assert queue.get_task_result(unknown) is None
    assert queue.get_task_statuses([unknown]) == [None]
    assert queue.delete_task(unknown) is False
    for verb in (queue.cancel_task, queue.retry_task, queue.requeue_task):
        with pytest.raises(TaskNotFound):
            verb(unknown)
    with pytest.raises(TaskNotFound):
        queue.wait_for_result(unknown, timeout=0.01)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"worker_id": 'w"1'}, "worker_id"), ({"worker_id": "w 1"}, "worker_id"),
    ({"worker_id": ""}, "worker_id"), ({"worker_id": 5}, "worker_id"),
    ({"name": "a\nb"}, "name"), ({"name": "a\ud800"}, "name"), ({"name": ""}, "name"),
    ({"name": "n" * 257}, "name"),
])
def test_worker_ids_and_names_are_checked(queue, untouched, kwargs, field):
    refused(field, TaskWorker, queue, **kwargs)
    untouched()


def test_worker_names_may_be_any_printable_text(queue):
    worker = TaskWorker(queue, worker_id="worker-edge:1", name="Ünïcode worker #2 (eu-west)")
    assert (worker.worker_id, worker.name) == ("worker-edge:1", "Ünïcode worker #2 (eu-west)")


# -- payloads -------------------------------------------------------------------------------

def nested(depth: int) -> dict:
    """A payload ``depth`` containers deep (the payload itself is depth 1)."""
    value: object = "leaf"
    for _ in range(depth - 1):
        value = [value]
    return {"deep": value}


@pytest.mark.parametrize("payload", [
    nested(100_000),                       # was a RecursionError
    nested(33),
    {"text": "\ud800"},                    # was a UnicodeEncodeError from redis-py
    {"\udfff": 1},
    {"text": "a\x00b"}, {"a\x00": 1}, {"list": [{"x": "\x00"}]},
    {1: "int key"}, {"inner": {2: "int key"}}, {None: 1}, {(1, 2): "tuple key"},
    {"nan": math.nan}, {"inf": [math.inf]}, {"big": 10 ** 5000},
    {"set": {1}}, {"bytes": b"x"}, {"obj": object()},
], ids=["depth-100000", "depth-33", "surrogate", "surrogate-key", "nul", "nul-key",
        "nested-nul", "int-key", "nested-int-key", "none-key", "tuple-key", "nan", "inf",
        "huge-int", "set", "bytes", "object"])
def test_bad_payloads_are_refused_naming_the_payload(queue, untouched, payload):
    refused("payload", lambda: queue.submit_task(Task(task_type="probe", payload=payload)))
    refused("payload", lambda: queue.submit_tasks([Task(task_type="probe"),
                                                   Task(task_type="probe", payload=payload)]))
    untouched()


def test_a_circular_payload_is_refused(queue, untouched):
    loop: dict = {}
    loop["self"] = loop
    refused("payload", lambda: queue.submit_task(Task(task_type="probe", payload={"a": loop})))
    untouched()


def test_payloads_at_the_limits_are_accepted_and_come_back_equal(queue, make_worker):
    seen = []
    payloads = [nested(32), {"text": "line 1\nline 2\ttab — ✓ 𝄞"}, {"spelled": "\\u0000"},
                {"a": [{"b": [{"c": None, "d": True, "e": 1.5, "f": -7}]}]}]
    ids = [queue.submit_task(Task(task_type="echo", payload=p)) for p in payloads]
    make_worker(handlers={"echo": lambda t: seen.append(t.payload) or t.payload}).start(burst=True)
    assert seen == payloads
    assert [queue.get_task_result(i)["result"] for i in ids] == payloads


# -- JSON documents built by the encoder --------------------------------------------------

def running(task_id: str) -> RunningTask:
    return RunningTask(task_id=task_id, task_type="echo", payload={}, priority=TaskPriority.NORMAL,
                       attempt=1, max_retries=0,
                       extra={"retry_delay": 1.0, "backoff": "fixed", "max_retry_delay": 60.0})


@pytest.mark.parametrize("task_id", ['a"b', "a\\", "x\ny", "{}"])
def test_the_result_document_is_valid_json_whatever_the_id_holds(queue, task_id):
    """A task id read back from Redis is the worker's to quote, not to trust: a record
    written before ids were checked (or by hand) must still get a valid document."""
    worker = TaskWorker(queue, handlers={"echo": lambda t: {"quote": '"', "nul": "\x00"}})
    outcome = worker.handlers.run(running(task_id))
    assert outcome.ok
    parsed = json.loads(outcome.doc)
    assert parsed["task_id"] == task_id
    assert parsed["result"] == {"quote": '"', "nul": "\x00"}
    assert parsed["worker_id"] == worker.worker_id and parsed["status"] == "completed"


def test_the_result_size_limit_applies_to_the_stored_document(queue):
    limit = queue.settings.max_result_bytes
    worker = TaskWorker(queue, handlers={"echo": lambda t: "x" * limit})
    outcome = worker.handlers.run(running("big"))
    assert not outcome.ok and "unusable result" in outcome.error and "over the limit" in outcome.error


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


@pytest.mark.parametrize(("raised", "expected"), [
    (ValueError("bad \ud800 text"), "ValueError: bad \\ud800 text"),
    (Unprintable(), "Unprintable: (its message could not be read)"),
    (ValueError("e" * 50_000), "ValueError: " + "e" * (10_000 - len("ValueError: "))),
], ids=["surrogate", "unprintable", "huge"])
def test_a_handler_error_of_any_content_fails_the_task_not_the_worker(queue, make_worker,
                                                                     raised, expected):
    def boom(task):
        raise raised
    task_id = queue.submit_task(Task(task_type="boom", max_retries=0))
    worker = make_worker(handlers={"boom": boom})
    assert worker.process_one()
    result = queue.get_task_result(task_id)
    assert result["status"] == "failed" and result["error"] == expected
    assert queue.get_task(task_id)["error"] == expected


@pytest.mark.parametrize("retry_after", [math.inf, "soon", 1e300])
def test_a_retry_after_that_is_no_usable_number_falls_back_to_the_policy(clocked_queue, fixed_clock,
                                                                        make_worker, redis_client,
                                                                        retry_after):
    def later(task):
        raise RetryableError("rate limited", retry_after=retry_after)
    task_id = clocked_queue.submit_task(Task(task_type="later", max_retries=2, retry_delay=5))
    worker = make_worker(queue=clocked_queue, handlers={"later": later})
    assert worker.process_one()
    assert clocked_queue.get_task_status(task_id)["status"] == "retry"
    due = redis_client.zscore(clocked_queue.keys.scheduled, task_id)
    expected = 5_000 if retry_after != 1e300 else 366 * DAY * 1000   # capped, still a time
    assert due == fixed_clock.ms + expected


@pytest.mark.parametrize("field", ["task_type", "priority", "backoff", "task_id", "parent_id",
                                   "session_id", "idempotency_key", "timeout", "delay",
                                   "run_at", "max_retries", "payload"])
def test_a_value_too_deep_to_print_is_refused_naming_the_field(queue, untouched, field):
    """The message quotes the bad value: one nested past the recursion limit (or whose
    repr raises) must still give a ValidationError, not a RecursionError."""
    deep = nested(100_000)["deep"]
    refused(field, lambda: queue.submit_task(Task(**{"task_type": "probe", field: deep})))
    untouched()
