"""``TaskWorker``: run order, retries, missing handlers, concurrency, cancellation, stopping.

Workers are stepped (``process_one``, ``start(burst=True)``) and time is moved with the
fixed clock; the only threads are the ones a test needs to hold a handler mid-run.
"""
from __future__ import annotations

import random
import threading
import time

import pytest

from engine import PermanentError, RetryableError, Settings, Task, TaskQueue, TaskWorker, ValidationError
from engine.connection import connect
from engine.policies import NO_RETRY, retry_delay_ms
from tests.support.indexes import assert_consistent
from tests.support.steps import event_types, wait_until


# -- run order ----------------------------------------------------------------------------

def test_strict_priority_and_fifo_within_a_priority(queue, make_worker):
    ran = []
    order = ["low", "normal", "urgent", "high", "normal", "low", "high", "urgent", "low", "high"]
    for i, priority in enumerate(order):
        queue.submit_task(Task(task_type="rec", priority=priority, payload={"p": priority, "i": i}))
    worker = make_worker(handlers={"rec": lambda t: ran.append((t.payload["p"], t.payload["i"]))})
    stats = worker.start(burst=True)
    expected = [(p, i) for rank in ("urgent", "high", "normal", "low")
                for i, p in enumerate(order) if p == rank]
    assert ran == expected
    assert stats["processed"] == len(order)


def test_fifo_holds_across_batched_claims(queue, make_worker):
    ran = []
    ids = queue.submit_tasks([Task(task_type="rec", payload={"i": i}) for i in range(300)])
    make_worker(handlers={"rec": lambda t: ran.append(t.task_id)}).start(burst=True)
    assert ran == ids
    assert queue.get_queue_stats().completed_tasks == 300


# -- retries --------------------------------------------------------------------------------

def test_failing_handler_is_retried_after_its_delay_then_dead_lettered(clocked_queue, fixed_clock,
                                                                      make_worker, redis_client):
    attempts = []

    def flaky(task):
        attempts.append(task.attempt)
        raise ValueError(f"boom on attempt {task.attempt}")

    worker = make_worker(queue=clocked_queue, handlers={"flaky": flaky})
    task_id = clocked_queue.submit_task(Task(task_type="flaky", max_retries=2, retry_delay=10))
    assert worker.process_one()
    assert_consistent(redis_client, clocked_queue.keys, task_id, "retry")
    record = clocked_queue.get_task(task_id)
    assert record["error"] == "ValueError: boom on attempt 1"
    assert worker.process_one() is False              # not due yet
    fixed_clock.advance(9.9)
    assert worker.process_one() is False
    fixed_clock.advance(0.1)
    assert worker.process_one() is True               # promoted and run again
    fixed_clock.advance(10)
    assert worker.process_one() is True
    assert attempts == [1, 2, 3]
    assert_consistent(redis_client, clocked_queue.keys, task_id, "failed")
    record = clocked_queue.get_task(task_id)
    assert record["error"] == "ValueError: boom on attempt 3"
    assert "Traceback (most recent call last)" in record["traceback"]
    assert "in flaky" in record["traceback"]
    result = clocked_queue.get_task_result(task_id)
    assert result["status"] == "failed" and result["attempts"] == 3
    assert result["error"] == "ValueError: boom on attempt 3"
    assert [t["task_id"] for t in clocked_queue.list_tasks(status="failed")] == [task_id]
    stats = clocked_queue.get_queue_stats()
    assert (stats.failed_tasks, stats.retried_tasks, stats.completed_tasks) == (1, 2, 0)
    assert event_types(clocked_queue, task_id).count("task.retry") == 2
    assert worker.stats == {"processed": 0, "failed": 1, "retried": 2, "lost": 0, "deferred": 0}


def test_retry_that_succeeds_completes_the_task(queue, make_worker):
    calls = []

    def second_time_lucky(task):
        calls.append(task.attempt)
        if task.attempt == 1:
            raise ConnectionError("provider hiccup")
        return "ok"

    task_id = queue.submit_task(Task(task_type="x", retry_delay=0))
    make_worker(handlers={"x": second_time_lucky}).start(burst=True)
    assert calls == [1, 2]
    assert queue.get_task_result(task_id)["result"] == "ok"
    assert queue.get_task_result(task_id)["attempts"] == 2


def test_retry_policy_defaults_come_from_settings(redis_url, namespace, make_worker, fixed_clock):
    settings = Settings.from_mapping({"QUEUE_MAX_RETRIES": "1", "QUEUE_RETRY_DELAY": "30"},
                                     heartbeat_interval=0.2, lease_timeout=1.0)
    client = connect(redis_url)
    try:
        queue = TaskQueue(client, settings=settings, namespace=namespace, clock=fixed_clock)
        task_id = queue.submit_task(Task(task_type="bad"))
        worker = make_worker(queue=queue, handlers={"bad": lambda t: 1 / 0})
        worker.process_one()
        record = queue.get_task(task_id)
        assert record["max_retries"] == 1 and record["status"] == "retry"
        assert client.zscore(queue.keys.scheduled, task_id) == fixed_clock.ms + 30_000
        fixed_clock.advance(30)
        worker.process_one()
        assert queue.get_task_status(task_id)["status"] == "failed"   # 1 retry, then dead
    finally:
        client.close()


def test_exponential_backoff_grows_with_jitter_and_a_cap():
    error = RuntimeError("x")
    delays = [retry_delay_ms(error, attempt, 2.0, "exponential", 60.0, rng=random.Random(7))
              for attempt in range(1, 8)]
    for attempt, delay in enumerate(delays, 1):
        full = min(60.0, 2.0 * 2 ** (attempt - 1)) * 1000
        assert full / 2 <= delay <= full
    assert delays == sorted(delays) and delays[-1] > delays[0] * 8
    assert retry_delay_ms(error, 50, 2.0, "exponential", 60.0, rng=random.Random(1)) <= 60_000
    # Seeded: the same draw twice; different seeds spread a crowd of retries out.
    assert retry_delay_ms(error, 3, 2.0, "exponential", 60.0, rng=random.Random(3)) == \
        retry_delay_ms(error, 3, 2.0, "exponential", 60.0, rng=random.Random(3))
    spread = {retry_delay_ms(error, 4, 2.0, "exponential", 60.0, rng=random.Random(s))
              for s in range(20)}
    assert len(spread) > 10


def test_fixed_backoff_permanent_and_retry_after():
    assert [retry_delay_ms(RuntimeError(), a, 1.5, "fixed", 60.0) for a in (1, 2, 5)] == [1500] * 3
    assert retry_delay_ms(PermanentError("bad request"), 1, 1.5, "fixed", 60.0) == NO_RETRY
    assert retry_delay_ms(RetryableError("429", retry_after=7.25), 1, 1.5, "exponential", 60.0) == 7250
    assert retry_delay_ms(RetryableError("503"), 1, 1.5, "fixed", 60.0) == 1500


def test_permanent_error_fails_at_once(queue, make_worker, redis_client):
    def reject(task):
        raise PermanentError("400 bad request: prompt too long")

    task_id = queue.submit_task(Task(task_type="x", max_retries=5))
    worker = make_worker(handlers={"x": reject})
    worker.process_one()
    assert_consistent(redis_client, queue.keys, task_id, "failed")
    result = queue.get_task_result(task_id)
    assert result["attempts"] == 1
    assert result["error"] == "PermanentError: 400 bad request: prompt too long"
    assert worker.stats["failed"] == 1 and worker.stats["retried"] == 0


def test_retryable_error_retry_after_sets_the_delay(clocked_queue, fixed_clock, make_worker,
                                                    redis_client):
    def rate_limited(task):
        raise RetryableError("429 too many requests", retry_after=42)

    task_id = clocked_queue.submit_task(Task(task_type="x", retry_delay=1))
    worker = make_worker(queue=clocked_queue, handlers={"x": rate_limited})
    worker.process_one()
    assert redis_client.zscore(clocked_queue.keys.scheduled, task_id) == fixed_clock.ms + 42_000
    fixed_clock.advance(41)
    assert clocked_queue.promote_due() == 0
    fixed_clock.advance(1)
    assert clocked_queue.promote_due() == 1


def test_unusable_result_fails_the_task_not_the_worker(queue, make_worker):
    bad = queue.submit_task(Task(task_type="bad", max_retries=3))
    good = queue.submit_task(Task(task_type="good"))
    worker = make_worker(handlers={"bad": lambda t: {"tags": {1, 2}}, "good": lambda t: "fine"})
    worker.start(burst=True)
    result = queue.get_task_result(bad)
    assert result["status"] == "failed" and "unusable result" in result["error"]
    assert result["attempts"] == 1             # retrying cannot fix it
    assert queue.get_task_result(good)["result"] == "fine"


# -- routing by type -----------------------------------------------------------------------------

@pytest.fixture
def fleet(queue, make_worker):
    """Two live, registered workers with different handlers: (echoer, translator)."""
    echoer = make_worker(handlers={"echo": lambda t: t.payload})
    translator = make_worker(handlers={"translate": lambda t: "bonjour"})
    echoer.beat()
    translator.beat()
    return echoer, translator


def test_a_worker_leaves_a_type_it_cannot_run_to_a_live_worker_that_can(queue, fleet, redis_client):
    echoer, translator = fleet
    word = queue.submit_task(Task(task_type="translate"))
    echo = queue.submit_task(Task(task_type="echo", payload={"v": 1}))
    assert echoer.process_one()                 # sets the translate task aside, runs echo
    assert queue.get_task_result(echo)["result"] == {"v": 1}
    assert_consistent(redis_client, queue.keys, word, "pending")
    assert redis_client.lrange(queue.keys.routed, 0, -1) == [word]
    # The translator is woken by name, not left to its next wait slice.
    assert redis_client.zscore(queue.keys.marker, translator.worker_id) is not None
    stats = queue.get_queue_stats()
    assert (stats.pending_tasks, stats.routed_tasks, sum(stats.depth_by_priority.values())) == (1, 1, 0)
    assert not echoer.process_one()             # nothing there for the echoer
    assert translator.process_one()
    result = queue.get_task_result(word)
    assert result["result"] == "bonjour" and result["attempts"] == 1     # never failed
    assert_consistent(redis_client, queue.keys, word, "completed")
    assert redis_client.llen(queue.keys.routed) == 0


def test_a_type_whose_last_worker_left_waits_out_the_grace_then_fails_for_want_of_a_handler(
        clocked_queue, fixed_clock, redis_client):
    queue = clocked_queue
    echoer = TaskWorker(queue, handlers={"echo": lambda t: t.payload})
    translator = TaskWorker(queue, handlers={"translate": lambda t: "bonjour"})
    echoer.beat()
    translator.beat()
    word = queue.submit_task(Task(task_type="translate", max_retries=0))
    assert not echoer.process_one()             # set aside for the translator...
    translator.store.worker_stop(translator.worker_id, {})   # ...which leaves (a deploy)
    fixed_clock.advance(queue.settings.handler_grace - 1)
    assert not echoer.process_one()             # its type was handled lately: it waits
    assert_consistent(redis_client, queue.keys, word, "pending")
    fixed_clock.advance(2)                      # no worker of its type came back in time
    assert echoer.process_one()
    assert queue.get_task_result(word)["error"] == "no handler for task type translate"
    assert_consistent(redis_client, queue.keys, word, "failed")


def test_a_rolling_deploy_loses_no_attempt(clocked_queue, fixed_clock, redis_client):
    queue = clocked_queue
    echoer = TaskWorker(queue, handlers={"echo": lambda t: t.payload})
    old = TaskWorker(queue, handlers={"translate": lambda t: "old"})
    echoer.beat()
    old.beat()
    old.store.worker_stop(old.worker_id, {})    # the old version stops...
    words = queue.submit_tasks([Task(task_type="translate", max_retries=0) for _ in range(3)])
    fixed_clock.advance(60)
    assert not echoer.process_one()             # ...the others leave its tasks alone...
    new = TaskWorker(queue, handlers={"translate": lambda t: "new"})
    new.beat()                        # ...and the new version takes them all
    assert new.start(burst=True)["processed"] == 3
    assert [queue.get_task_result(w)["result"] for w in words] == ["new"] * 3
    assert all(queue.get_task_result(w)["attempts"] == 1 for w in words)


def test_a_type_no_worker_ever_handled_fails_at_once(queue, fleet, redis_client):
    echoer, _ = fleet
    typo = queue.submit_task(Task(task_type="translat", max_retries=0))
    assert echoer.process_one()
    assert queue.get_task_result(typo)["error"] == "no handler for task type translat"


@pytest.mark.parametrize("verb", ["cancel", "requeue", "delete"])
def test_verbs_find_a_task_that_was_set_aside(queue, fleet, redis_client, verb):
    echoer, _ = fleet
    word = queue.submit_task(Task(task_type="translate"))
    assert not echoer.process_one()
    assert redis_client.llen(queue.keys.routed) == 1
    if verb == "cancel":
        queue.cancel_task(word)
        assert_consistent(redis_client, queue.keys, word, "cancelled")
    elif verb == "requeue":
        queue.requeue_task(word, priority="high")
        assert_consistent(redis_client, queue.keys, word, "pending")
        assert redis_client.lrange(queue.keys.queue("high"), 0, -1) == [word]
    else:
        queue.delete_tasks([word])
        assert_consistent(redis_client, queue.keys, word, "gone")
    assert redis_client.llen(queue.keys.routed) == 0


def test_a_lone_worker_still_fails_what_it_cannot_run(queue, make_worker, redis_client):
    # No other live worker has the handler: nothing is set aside, the task fails as before.
    lone = make_worker(handlers={"echo": lambda t: t.payload})
    lone.beat()
    word = queue.submit_task(Task(task_type="translate", max_retries=0))
    assert lone.process_one()
    assert queue.get_task_result(word)["error"] == "no handler for task type translate"
    assert redis_client.llen(queue.keys.routed) == 0


# -- missing handlers ---------------------------------------------------------------------------

def test_task_without_a_handler_fails_and_can_be_retried_once_one_is_registered(queue, make_worker,
                                                                                redis_client):
    orphan = queue.submit_task(Task(task_type="translate", max_retries=0))
    other = queue.submit_task(Task(task_type="echo", payload={"v": 1}))
    worker = make_worker(handlers={"echo": lambda t: t.payload})
    stats = worker.start(burst=True)
    assert_consistent(redis_client, queue.keys, orphan, "failed")
    assert queue.get_task_result(orphan)["error"] == "no handler for task type translate"
    assert queue.get_task_result(other)["result"] == {"v": 1}     # the worker went on
    assert stats["failed"] == 1 and stats["processed"] == 1
    worker.register_handler("translate", lambda t: "bonjour")
    assert queue.retry_task(orphan) == "failed"
    assert worker.process_one()
    assert queue.get_task_result(orphan)["result"] == "bonjour"
    assert_consistent(redis_client, queue.keys, orphan, "completed")


def test_task_without_a_handler_keeps_its_retry_budget_error(queue, make_worker):
    task_id = queue.submit_task(Task(task_type="unknown", max_retries=1, retry_delay=3600))
    make_worker().process_one()
    record = queue.get_task(task_id)
    assert record["status"] == "retry"
    assert record["error"] == "no handler for task type unknown"


def test_register_handler_validates(make_worker):
    worker = make_worker()
    with pytest.raises(ValidationError):
        worker.register_handler("x", "not callable")
    with pytest.raises(ValidationError):
        make_worker(concurrency=0)

    @worker.handler("decorated")
    def decorated(task):
        return 1

    assert worker.handler_types == ["decorated"]


# -- concurrency ------------------------------------------------------------------------------------

def test_concurrency_runs_that_many_handlers_at_once(queue, make_worker):
    barrier = threading.Barrier(4, timeout=5)
    lock, running, peak = threading.Lock(), [0], [0]

    def meet(task):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            barrier.wait()          # passes only when four handlers run at the same time
        finally:
            with lock:
                running[0] -= 1
        return task.payload["i"]

    ids = queue.submit_tasks([Task(task_type="meet", payload={"i": i}) for i in range(8)])
    stats = make_worker(concurrency=4, handlers={"meet": meet}).start(burst=True)
    assert stats["processed"] == 8 and stats["failed"] == 0
    assert peak[0] == 4
    assert [queue.get_task_result(i)["result"] for i in ids] == list(range(8))


# -- cancellation of a running task ---------------------------------------------------------------

def test_cancelled_running_task_outcome_is_rejected_and_counted_lost(queue, make_worker, redis_client):
    def cancels_itself(task):
        queue.cancel_task(task.task_id, reason="operator stop")
        return "too late"

    task_id = queue.submit_task(Task(task_type="x"))
    worker = make_worker(handlers={"x": cancels_itself})
    worker.process_one()
    assert worker.stats["lost"] == 1 and worker.stats["processed"] == 0
    assert_consistent(redis_client, queue.keys, task_id, "cancelled")
    result = queue.get_task_result(task_id)
    assert result["status"] == "cancelled" and result["result"] is None
    assert result["error"] == "operator stop"
    types = event_types(queue, task_id)
    assert "task.cancelled" in types and "task.completed" not in types
    cancelled = [e for e in queue.read_events() if e["type"] == "task.cancelled"]
    assert cancelled[0]["data"]["previous"] == "running"


def test_heartbeat_tells_a_running_handler_it_was_cancelled(queue, make_worker):
    seen = {}
    started = threading.Event()

    def cooperative(task):
        started.set()
        deadline = time.monotonic() + 5
        while not task.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        seen["cancelled"] = task.cancelled
        return "stopped early"

    task_id = queue.submit_task(Task(task_type="x"))
    worker = make_worker(handlers={"x": cooperative})
    thread = threading.Thread(target=worker.start)
    thread.start()
    try:
        assert started.wait(5)
        queue.cancel_task(task_id)
        wait_until(lambda: "cancelled" in seen, what="the handler to notice")
    finally:
        worker.stop()
        thread.join(10)
    assert seen["cancelled"] is True
    assert worker.stats["lost"] == 1
    assert queue.get_task_status(task_id)["status"] == "cancelled"


# -- life cycle ----------------------------------------------------------------------------------------

def test_burst_registers_then_leaves_with_events(queue, make_worker, redis_client):
    queue.submit_tasks([Task(task_type="x") for _ in range(3)])
    later = queue.submit_task(Task(task_type="x", delay=3600))
    worker = make_worker(handlers={"x": lambda t: 1}, name="burst-test")
    stats = worker.start(burst=True)
    assert stats["processed"] == 3
    assert queue.get_task_status(later)["status"] == "scheduled"   # burst does not wait for it
    events = [e for e in queue.read_events() if e["data"].get("worker_id") == worker.worker_id
              and e["type"].startswith("worker.")]
    assert [e["type"] for e in events] == ["worker.started", "worker.stopped"]
    assert redis_client.zscore(queue.keys.workers, worker.worker_id) is None
    record = redis_client.hgetall(queue.keys.worker(worker.worker_id))
    assert record["state"] == "stopped" and record["processed"] == "3"
    assert record["name"] == "burst-test"
    assert queue.get_queue_stats().active_workers == 0


def test_running_worker_is_registered_and_counted_active(queue, make_worker):
    started = threading.Event()
    release = threading.Event()

    def hold(task):
        started.set()
        release.wait(5)
        return 1

    queue.submit_task(Task(task_type="x"))
    worker = make_worker(handlers={"x": hold})
    thread = threading.Thread(target=worker.start)
    thread.start()
    try:
        assert started.wait(5)
        assert queue.get_queue_stats().active_workers == 1
        workers = queue.list_workers()
        assert [w["worker_id"] for w in workers] == [worker.worker_id]
        assert worker.worker_id.startswith("worker-") and len(worker.worker_id) == 15
    finally:
        release.set()
        worker.stop()
        thread.join(10)
    assert queue.get_queue_stats().active_workers == 0


def test_graceful_stop_finishes_the_running_task_and_releases_prefetched_ones(queue, make_worker,
                                                                              redis_client):
    in_handler, release = threading.Event(), threading.Event()
    ran = []

    def quick(task):
        ran.append(task.task_id)

    def hold(task):
        ran.append(task.task_id)
        in_handler.set()
        release.wait(5)
        return "finished in hand"

    # Quick tasks first: the worker measures them as cheap and claims the rest as one batch.
    warmup = queue.submit_tasks([Task(task_type="quick") for _ in range(3)])
    held = queue.submit_task(Task(task_type="hold"))
    waiting = queue.submit_tasks([Task(task_type="quick") for _ in range(5)])
    worker = make_worker(handlers={"quick": quick, "hold": hold})
    thread = threading.Thread(target=worker.start)
    thread.start()
    assert in_handler.wait(5)
    prefetched = [i for i in waiting if queue.get_task_status(i)["status"] == "running"]
    assert prefetched, "the batch should have claimed tasks behind the held one"
    worker.stop()
    release.set()
    thread.join(10)
    assert not thread.is_alive()
    assert ran == [*warmup, held]
    assert queue.get_task_result(held)["result"] == "finished in hand"
    for task_id in waiting:                       # handed back, not lost, attempt given back
        assert_consistent(redis_client, queue.keys, task_id, "pending")
        assert queue.get_task(task_id)["attempts"] == 0
    assert redis_client.lrange(queue.keys.queue("normal"), 0, -1) == waiting   # order kept
    assert redis_client.zscore(queue.keys.workers, worker.worker_id) is None
    assert "worker.stopped" in [e["type"] for e in queue.read_events()
                                if e["data"].get("worker_id") == worker.worker_id]


def test_graceful_stop_with_slots_releases_queued_work(queue, make_worker, redis_client):
    in_handler, release = threading.Event(), threading.Event()

    def hold(task):
        in_handler.set()
        release.wait(5)
        return task.payload["i"]

    ids = queue.submit_tasks([Task(task_type="hold", payload={"i": i}) for i in range(5)])
    worker = make_worker(concurrency=2, handlers={"hold": hold})
    thread = threading.Thread(target=worker.start)
    thread.start()
    assert in_handler.wait(5)
    wait_until(lambda: queue.get_queue_stats().running_tasks == 2, what="two running")
    worker.stop()
    release.set()
    thread.join(10)
    statuses = [queue.get_task_status(i)["status"] for i in ids]
    assert statuses == ["completed", "completed", "pending", "pending", "pending"]
    for task_id in ids:
        assert_consistent(redis_client, queue.keys, task_id)
    assert worker.stats["processed"] == 2


def test_an_idle_worker_survives_the_server_forgetting_its_scripts(queue, make_worker, redis_client):
    worker = make_worker(handlers={"echo": lambda task: task.payload})
    runner = threading.Thread(target=worker.start, daemon=True)
    runner.start()
    try:
        redis_client.script_flush()          # what a restart without persistence does
        task_id = queue.submit_task(Task(task_type="echo", payload={"n": 7}))
        assert queue.wait_for_result(task_id, timeout=10)["result"] == {"n": 7}
    finally:
        worker.stop()
        queue.client.zadd(queue.keys.marker, {"0": 0})   # wake it from its wait at once
        runner.join(10)
    assert not runner.is_alive()


def test_a_handler_learns_through_its_context_that_its_task_was_cancelled(queue, make_worker):
    seen, started = {}, threading.Event()

    def long_running(task):
        context = task.context
        seen["worker"], seen["stopping"] = context.worker_id, context.stopping
        started.set()
        deadline = time.monotonic() + 10
        while not context.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)      # a handler's own work, checking in between
        seen["cancelled"] = context.cancelled
        return "stopped early"

    worker = make_worker(concurrency=2, handlers={"long": long_running})
    task_id = queue.submit_task(Task(task_type="long"))
    thread = threading.Thread(target=worker.start)
    thread.start()
    try:
        assert started.wait(10)
        queue.cancel_task(task_id)          # the next heartbeat tells the worker
        wait_until(lambda: "cancelled" in seen, timeout=10, what="the handler to see it")
    finally:
        worker.stop()
        thread.join(10)
    assert seen == {"worker": worker.worker_id, "stopping": False, "cancelled": True}
    assert worker.stats["lost"] == 1        # its late result was refused
    assert queue.get_task_status(task_id)["status"] == "cancelled"
