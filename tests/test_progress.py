"""Progress and streamed text: ``task.report_progress`` and ``task.stream`` inside a handler,
fenced, stored with the task (replayed after it ends), published as ``task.progress``
events, and coalesced to at most ten writes a second per task (engine/progress.py)."""
from __future__ import annotations

import asyncio
import math

import pytest

from engine import Task
from engine.errors import ValidationError
from engine.progress import FLUSH_SECONDS, MAX_PARTIAL_BYTES, ProgressPump


class StepClock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def progress_events(queue, task_id: str) -> list[dict]:
    return [e["data"] for e in queue.read_events(count=10_000)
            if e["type"] == "task.progress" and e["data"]["task_id"] == task_id]


def event_types(queue, task_id: str) -> list[str]:
    return [e["type"] for e in queue.read_events(count=10_000)
            if e["data"].get("task_id") == task_id]


def streaming(task):
    task.report_progress(0.25, "reading the question")
    task.stream("Hello, ")
    task.report_progress(0.5, "halfway")
    task.stream("world")
    return {"answer": "Hello, world"}


async def streaming_async(task):
    task.report_progress(0.25)
    await asyncio.sleep(0)
    task.stream("Bonjour, ")
    task.context.stream("le monde")
    task.context.report_progress(1, "done")
    return {"answer": "Bonjour, le monde"}


# -- what a handler reports is stored and replayed -------------------------------------------
def test_a_thread_handlers_progress_and_text_are_there_after_it_completes(queue, make_worker):
    worker = make_worker()
    worker.register_handler("talk", streaming)
    task_id = queue.submit_task(Task(task_type="talk"))
    assert worker.process_one()
    status = queue.get_task_status(task_id)
    assert status["status"] == "completed"
    assert (status["progress"], status["progress_message"]) == (0.5, "halfway")
    assert status["partial"] == "Hello, world"
    assert queue.get_task(task_id)["partial"] == "Hello, world"      # the console's read
    # The last of the text is written before the task's end, not after it.
    types = event_types(queue, task_id)
    assert types.index("task.progress") < types.index("task.completed")


def test_an_async_handler_streams_through_the_event_loop_runner(queue, make_worker):
    worker = make_worker(concurrency=4)
    worker.register_handler("talk", streaming_async)
    ids = [queue.submit_task(Task(task_type="talk")) for _ in range(3)]
    assert worker.start(burst=True)["processed"] == 3
    for task_id in ids:
        status = queue.get_task_status(task_id)
        assert status["partial"] == "Bonjour, le monde"
        assert (status["progress"], status["progress_message"]) == (1.0, "done")


def test_thread_runner_handlers_stream_as_well(queue, make_worker):
    worker = make_worker(concurrency=3)
    worker.register_handler("talk", streaming)
    ids = [queue.submit_task(Task(task_type="talk")) for _ in range(5)]
    assert worker.start(burst=True)["processed"] == 5
    assert [queue.get_task_status(t)["partial"] for t in ids] == ["Hello, world"] * 5


def test_a_task_that_never_reports_reads_as_no_progress(queue, make_worker):
    worker = make_worker()
    worker.register_handler("quiet", lambda task: "ok")
    task_id = queue.submit_task(Task(task_type="quiet"))
    pending = queue.get_task_status(task_id)
    assert (pending["progress"], pending["progress_message"], pending["partial"]) == (None, None, "")
    worker.process_one()
    assert queue.get_task_status(task_id)["partial"] == ""
    assert progress_events(queue, task_id) == []


@pytest.mark.parametrize("kind", ["thread", "async"])
def test_readers_see_the_answer_grow_while_the_handler_runs(queue, make_worker, kind):
    import threading

    from tests.support.steps import wait_until
    go_on = threading.Event()

    def plain(task):
        task.report_progress(0.3, "first part")
        task.stream("first part")
        go_on.wait(10)
        task.stream(", second part")
        return "done"

    async def coroutine(task):
        task.report_progress(0.3, "first part")
        task.stream("first part")
        await asyncio.to_thread(go_on.wait, 10)
        task.stream(", second part")
        return "done"
    worker = make_worker(concurrency=2)
    worker.register_handler("talk", plain if kind == "thread" else coroutine)
    task_id = queue.submit_task(Task(task_type="talk"))
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    try:
        wait_until(lambda: queue.get_task_status(task_id)["partial"] == "first part",
                   what="the first part to be readable while the task runs")
        status = queue.get_task_status(task_id)
        assert status["status"] == "running" and status["progress"] == 0.3
        go_on.set()
        assert queue.wait_for_result(task_id, timeout=10)["status"] == "completed"
        assert queue.get_task_status(task_id)["partial"] == "first part, second part"
    finally:
        go_on.set()
        worker.stop()
        thread.join(10)


# -- published as events ---------------------------------------------------------------------
def test_each_write_is_a_task_progress_event_on_the_channel_and_in_the_log(queue, make_worker,
                                                                          redis_client):
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(queue.keys.events)
    worker = make_worker()
    worker.register_handler("talk", streaming)
    task_id = queue.submit_task(Task(task_type="talk"))
    worker.process_one()
    logged = progress_events(queue, task_id)
    # process_one has no pump thread: everything goes in the one write before the end.
    assert len(logged) == 1
    event = logged[0]
    assert event["status"] == "running"
    assert (event["progress"], event["message"]) == (0.5, "halfway")
    assert (event["text"], event["offset"], event["partial_bytes"]) == ("Hello, world", 0, 12)
    published = []
    for _ in range(20):    # get_message answers None for the (ignored) subscribe reply too
        message = pubsub.get_message(timeout=0.5)
        if message is not None:
            published.append(message["data"])
        elif published:
            break
    pubsub.close()
    assert any('"task.progress"' in text and task_id in text for text in published)


# -- coalescing: at most ten writes a second per task ----------------------------------------
def claimed(worker, queue, task_type: str = "talk"):
    queue.submit_task(Task(task_type=task_type))
    worker.register_handler(task_type, lambda task: None)
    (task,) = worker.claim(1)
    return task


def test_a_thousand_chunks_in_a_second_make_at_most_eleven_writes(queue, make_worker):
    worker = make_worker()
    task = claimed(worker, queue)
    clock = StepClock()
    pump = ProgressPump(queue.store, worker.outage, monotonic=clock)
    for i in range(1000):          # one chunk a millisecond, the pump looking after each
        pump.stream(task, f"{i},")
        if i % 100 == 0:
            pump.report(task, i / 1000, f"chunk {i}")
        pump.flush_due()
        clock.now += 0.001
    pump.flush_tasks([type("Outcome", (), {"task": task})()])      # before the outcome
    assert pump.calls <= 11
    assert len(progress_events(queue, task.task_id)) == pump.calls
    status = queue.get_task_status(task.task_id)
    assert status["partial"] == "".join(f"{i}," for i in range(1000))
    assert status["progress"] == 0.9 and status["progress_message"] == "chunk 900"


def test_a_task_is_written_again_only_after_the_flush_interval(queue, make_worker):
    worker = make_worker()
    task = claimed(worker, queue)
    clock = StepClock()
    pump = ProgressPump(queue.store, worker.outage, monotonic=clock)
    pump.stream(task, "a")
    assert pump.flush_due() is None and pump.calls == 1      # the first write goes at once
    pump.stream(task, "b")
    clock.now += FLUSH_SECONDS / 2
    assert pump.flush_due() == pytest.approx(FLUSH_SECONDS / 2) and pump.calls == 1
    clock.now += FLUSH_SECONDS / 2
    assert pump.flush_due() is None and pump.calls == 2
    assert queue.get_task_status(task.task_id)["partial"] == "ab"


def test_many_tasks_due_together_share_one_script_call(queue, make_worker):
    worker = make_worker()
    for _ in range(20):
        queue.submit_task(Task(task_type="talk"))
    worker.register_handler("talk", lambda task: None)
    tasks = worker.claim(20)
    pump = ProgressPump(queue.store, worker.outage, monotonic=StepClock())
    for n, task in enumerate(tasks):
        pump.stream(task, f"task {n}")
    pump.flush_due()
    assert pump.calls == 1
    assert [queue.get_task_status(t.task_id)["partial"] for t in tasks] == \
        [f"task {n}" for n in range(20)]


def test_a_real_worker_streaming_fast_writes_a_few_times_not_per_chunk(queue, make_worker):
    worker = make_worker(concurrency=2)

    def chatty(task):
        for i in range(5000):
            task.stream("x")
        return "done"
    worker.register_handler("chatty", chatty)
    task_id = queue.submit_task(Task(task_type="chatty"))
    assert worker.start(burst=True)["processed"] == 1
    assert queue.get_task_status(task_id)["partial"] == "x" * 5000
    assert worker.progress.calls == len(progress_events(queue, task_id)) < 100


# -- fencing ---------------------------------------------------------------------------------
def test_a_stale_token_cannot_write(queue, make_worker):
    worker = make_worker()
    task = claimed(worker, queue)
    item = (task.task_id, "not-the-token", "0.5", "stale", "old text", 0)
    assert queue.store.progress([item], 2048) == [-3]
    status = queue.get_task_status(task.task_id)
    assert (status["progress"], status["partial"]) == (None, "")
    assert progress_events(queue, task.task_id) == []
    assert queue.store.progress([(task.task_id, task.token, "0.5", "", "mine", 0)], 2048) == [1]


def test_a_worker_that_lost_its_lease_writes_nothing_more(queue, make_worker):
    worker = make_worker()
    task = claimed(worker, queue)
    clock = StepClock()
    pump = ProgressPump(queue.store, worker.outage, monotonic=clock)
    pump.stream(task, "first attempt")
    pump.flush_due()
    queue.requeue_task(task.task_id)          # the task is no longer this worker's
    pump.stream(task, " and more")
    clock.now += 1
    pump.flush_due()                          # refused: the buffer is dropped
    calls = pump.calls
    pump.stream(task, " still streaming")     # what the handler streams after is ignored
    clock.now += 1
    pump.flush_due()
    assert pump.calls == calls
    (again,) = worker.claim(1)                # a new attempt, a new token
    assert again.token != task.token
    status = queue.get_task_status(task.task_id)
    assert status["partial"] == "" and status["progress"] is None    # not the old attempt's
    pump.stream(again, "second attempt")
    pump.flush_due()
    assert queue.get_task_status(task.task_id)["partial"] == "second attempt"
    assert queue.client.get(queue.keys.partial(task.task_id)) == "second attempt"


def test_a_write_sent_again_appends_its_text_once(queue, make_worker):
    worker = make_worker()
    task = claimed(worker, queue)
    first = (task.task_id, task.token, "", "", "Hello", 0)
    assert queue.store.progress([first], 2048) == [1]
    assert queue.store.progress([first], 2048) == [1]      # its reply was lost: sent again
    again = (task.task_id, task.token, "", "", "Hello, world", 0)   # with more text since
    assert queue.store.progress([again], 2048) == [1]
    assert queue.get_task_status(task.task_id)["partial"] == "Hello, world"


def test_text_past_the_cap_is_dropped_at_a_character(queue, make_worker):
    worker = make_worker()
    task = claimed(worker, queue)
    pump = ProgressPump(queue.store, worker.outage, monotonic=StepClock())
    for _ in range(MAX_PARTIAL_BYTES // 30 + 10):
        pump.stream(task, "€" * 10)      # three bytes each: the cap falls inside one
    pump.stream(task, "more")
    pump.flush_due()
    partial = queue.get_task_status(task.task_id)["partial"]
    assert set(partial) == {"€"}
    assert len(partial.encode()) == MAX_PARTIAL_BYTES - MAX_PARTIAL_BYTES % 3
    assert queue.store.progress([(task.task_id, task.token, "", "", "", 0)], 2048) == [1]


def test_long_chunks_are_stored_but_not_copied_into_events(queue, make_worker):
    worker = make_worker()
    task = claimed(worker, queue)
    pump = ProgressPump(queue.store, worker.outage, monotonic=StepClock())
    pump.stream(task, "y" * 5000)
    pump.flush_due()
    (event,) = progress_events(queue, task.task_id)
    assert "text" not in event and event["partial_bytes"] == 5000


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [1.5, -0.1, math.nan, math.inf, True, "0.5", None])
def test_a_fraction_that_is_no_number_from_0_to_1_is_refused(queue, make_worker, fraction):
    worker = make_worker()
    task = claimed(worker, queue)
    with pytest.raises(ValidationError, match="fraction must be a number from 0 to 1"):
        task.report_progress(fraction)
    assert worker.progress.flush_due() is None and worker.progress.calls == 0


@pytest.mark.parametrize("message", ["two\nlines", "x" * 1001, 42])
def test_a_message_that_is_no_one_line_text_is_refused(queue, make_worker, message):
    worker = make_worker()
    task = claimed(worker, queue)
    with pytest.raises(ValidationError, match="message"):
        task.report_progress(0.5, message)
    worker.progress.flush_due()
    assert worker.progress.calls == 0


@pytest.mark.parametrize("text", [b"bytes", None, 42, ["list"]])
def test_stream_takes_text_only(queue, make_worker, text):
    worker = make_worker()
    task = claimed(worker, queue)
    with pytest.raises(ValidationError, match="stream takes text"):
        task.stream(text)
    worker.progress.flush_due()
    assert worker.progress.calls == 0


def test_a_handler_run_outside_a_worker_may_still_report(queue):
    from engine.models import RunningTask, TaskPriority
    task = RunningTask("t1", "talk", {}, TaskPriority.NORMAL, attempt=1, max_retries=0)
    assert streaming(task) == {"answer": "Hello, world"}     # nothing to write to: no error


# -- the read side ---------------------------------------------------------------------------
def test_get_task_progress_reads_many_tasks_in_order(queue, make_worker):
    worker = make_worker()
    worker.register_handler("talk", streaming)
    ids = [queue.submit_task(Task(task_type="talk")) for _ in range(2)]
    worker.process_one()
    first, second = queue.get_task_progress(ids)
    assert first == {"progress": 0.5, "progress_message": "halfway", "partial": "Hello, world"}
    assert second == {"progress": None, "progress_message": None, "partial": ""}
    with pytest.raises(ValidationError):
        queue.get_task_progress(["bad id!"])


# -- the console: the task detail and the monitor widget --------------------------------------
def running_with_progress(queue, make_worker):
    """A task held by a worker, with progress and text written as its handler would."""
    worker = make_worker()
    task = claimed(worker, queue)
    clock = StepClock()
    pump = ProgressPump(queue.store, worker.outage, monotonic=clock)
    return task, pump, clock


def progress_bars(at) -> list[tuple[int, str]]:
    return [(bar.proto.value, bar.proto.text) for bar in at.get("progress")]


def test_the_task_detail_shows_the_bar_moving_and_the_answer_growing(console_env, queue,
                                                                     make_worker):
    from streamlit.testing.v1 import AppTest

    from console.testing import APP, PAGE_FILES
    task, pump, clock = running_with_progress(queue, make_worker)
    pump.report(task, 0.4, "reading **the** sources")
    pump.stream(task, "The answer is [a link](https://evil.example) ")
    pump.flush_due()
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    at.switch_page(PAGE_FILES["Tasks"])
    at.query_params["task"] = task.task_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (value, text), = progress_bars(at)
    assert value == 40 and text.startswith("40% · reading \\*\\*the\\*\\* sources")
    answer = [c.value for c in at.code if c.value.startswith("The answer is")]
    assert answer == ["The answer is [a link](https://evil.example) "]      # text, as streamed
    assert any("Answer so far" in c.value for c in at.caption)
    clock.now += 1
    pump.report(task, 0.9, "writing")
    pump.stream(task, "forty-two.")
    pump.flush_due()
    at.run()                                   # the next refresh of the live fragment
    assert progress_bars(at) == [(90, "90% · writing")]
    assert "The answer is [a link](https://evil.example) forty-two." in [c.value for c in at.code]
    timeline = at.get_by_key("tasks_timeline").dataframe[0].value
    assert [w for w in timeline["What"] if "progress" in w] == ["task.progress (2 reports)"]


def monitor_script():
    from engine.agent import AgentExecutor

    from console import render_task_monitor

    render_task_monitor(AgentExecutor(), key="watch", refresh_seconds=0)


def test_the_monitor_widget_shows_progress_and_the_answer_so_far(console_env, queue, make_worker):
    from streamlit.testing.v1 import AppTest
    task, pump, _ = running_with_progress(queue, make_worker)
    pump.report(task, 0.5, "halfway")
    pump.stream(task, "Paris is")
    pump.flush_due()
    at = AppTest.from_function(monitor_script, default_timeout=30)
    at.session_state["watch_watched"] = [task.task_id]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    rows = at.get_by_key("watch").dataframe[0].value
    assert rows["Progress"].tolist() == [0.5]
    assert rows["Answer / error"].tolist() == ["Paris is"]
    assert progress_bars(at) == [(50, "50% · halfway")]
    assert "Paris is" in [c.value for c in at.code]


def test_deleting_a_task_deletes_its_streamed_text(queue, make_worker):
    worker = make_worker()
    worker.register_handler("talk", streaming)
    task_id = queue.submit_task(Task(task_type="talk"))
    worker.process_one()
    assert queue.client.exists(queue.keys.partial(task_id))
    queue.delete_task(task_id)
    assert not queue.client.exists(queue.keys.partial(task_id))


def test_a_progress_write_that_breaks_never_keeps_the_result_from_being_written(queue,
                                                                             make_worker):
    worker = make_worker()
    worker.register_handler("talk", streaming)
    task_id = queue.submit_task(Task(task_type="talk"))

    def broken(items, event_text_bytes):
        raise RuntimeError("a bug in the progress write")
    worker.progress.store = type("BrokenStore", (), {"progress": staticmethod(broken)})()
    assert worker.process_one()
    assert queue.get_task_result(task_id)["result"] == {"answer": "Hello, world"}
    assert queue.get_task_status(task_id)["partial"] == ""


def test_progress_waits_out_a_redis_outage_with_the_outcome(queue, make_worker):
    import redis
    worker = make_worker()
    worker.register_handler("talk", streaming)
    task_id = queue.submit_task(Task(task_type="talk"))
    real, calls = worker.progress.store, []

    class FlakyStore:
        def progress(self, items, event_text_bytes):
            calls.append(items)
            if len(calls) == 1:
                raise redis.ConnectionError("Redis went away")
            return real.progress(items, event_text_bytes)
    worker.progress.store = FlakyStore()
    worker.process_one()                       # the outcome waits with the text
    assert queue.get_task_status(task_id)["status"] == "running"
    assert worker.writer.flush()               # Redis is back: text, then outcome
    status = queue.get_task_status(task_id)
    assert status["status"] == "completed" and status["partial"] == "Hello, world"
    assert calls[0] == calls[1]                # the same write, sent again whole
