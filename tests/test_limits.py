"""Provider limits (engine/limits.py, claim.lua, settle.lua, defer.lua) against the real
Redis, on an injected clock: each claim is a step, so pacing is checked exactly."""
from __future__ import annotations

import pytest

from engine import Task
from engine.errors import RateLimited, ValidationError
from engine.limits import (ProviderSignal, backend_limit_key, defer_ms, parse_duration_ms,
                           signal_from_headers)

KEY = "openai api.example.test gpt-test"


def limited_worker(make_worker, queue, key=KEY, handler=None, concurrency=1):
    worker = make_worker(queue=queue, concurrency=concurrency)
    worker.register_handler("llm", handler or (lambda task: {"ok": task.payload["i"]}), limit=key)
    worker.register_handler("plain", lambda task: "plain")
    return worker


def submit(queue, n, task_type="llm", **options):
    return [queue.submit_task(Task(task_type=task_type, payload={"i": i}, **options))
            for i in range(n)]


def claim_ids(worker, count):
    return [task.task_id for task in worker.claim(count)]


def finish(worker, tasks):
    for task in tasks:
        worker.writer.record(worker.handlers.run(task))
    assert worker.writer.flush()


def test_a_configured_rate_hands_out_one_task_per_interval_and_parks_the_rest(
        clocked_queue, fixed_clock, make_worker):
    clocked_queue.set_limit(KEY, rpm=60)          # one a second (less 2%: 58.8 - 1 burst)
    ids = submit(clocked_queue, 5)
    worker = limited_worker(make_worker, clocked_queue)
    first = worker.claim(5)
    assert [t.task_id for t in first] == ids[:1]
    assert first[0].limit_key == KEY
    waiting = clocked_queue.get_task_status(ids[1])
    assert waiting["status"] == "pending"
    assert worker.claims._next_limit > 0          # the worker sleeps until the key frees
    assert claim_ids(worker, 5) == []             # nothing more within the interval
    fixed_clock.advance(1.05)
    assert claim_ids(worker, 5) == ids[1:2]       # in submit order, one per interval
    fixed_clock.advance(1.05)
    assert claim_ids(worker, 5) == ids[2:3]
    state = next(s for s in clocked_queue.limit_states() if s["key"] == KEY)
    assert state["configured"]["rpm"] == 60
    assert state["deferred"] == 2 and state["in_flight"] == 3


def test_other_types_keep_flowing_while_a_limited_key_is_spent(clocked_queue, make_worker):
    clocked_queue.set_limit(KEY, rpm=60)
    limited = submit(clocked_queue, 3)
    plain = submit(clocked_queue, 3, task_type="plain")
    worker = limited_worker(make_worker, clocked_queue)
    assert sorted(claim_ids(worker, 10)) == sorted(limited[:1] + plain)


def test_parked_tasks_keep_priority_order(clocked_queue, fixed_clock, make_worker):
    clocked_queue.set_limit(KEY, rpm=60)
    worker = limited_worker(make_worker, clocked_queue)
    submit(clocked_queue, 1)
    assert len(claim_ids(worker, 10)) == 1        # spends the first slot
    low = submit(clocked_queue, 1, priority="low")
    normal = submit(clocked_queue, 1)
    assert claim_ids(worker, 10) == []            # both parked
    urgent = submit(clocked_queue, 1, priority="urgent")
    assert claim_ids(worker, 10) == []            # parked too: behind nothing of its rank
    order = []
    for _ in range(3):
        fixed_clock.advance(1.05)
        order += claim_ids(worker, 10)
    assert order == urgent + normal + low


def test_a_provider_429_defers_without_spending_an_attempt_and_pauses_the_key(
        clocked_queue, fixed_clock, make_worker):
    answers = iter(["429"] * 6 + ["ok"])

    def handler(task):
        if next(answers) == "429":
            raise RateLimited("slow down", retry_after=2.0)
        return "answered"

    clocked_queue.set_limit(KEY, rpm=6000)
    task_id = clocked_queue.submit_task(Task(task_type="llm", payload={"i": 0}, max_retries=1))
    worker = limited_worker(make_worker, clocked_queue, handler=handler)
    for _ in range(6):                            # six 429s: far more than max_retries
        batch = worker.claim(1)
        assert [t.task_id for t in batch] == [task_id]
        finish(worker, batch)
        status = clocked_queue.get_task_status(task_id)
        assert status["status"] == "pending"
        assert status["attempts"] == 0
        assert claim_ids(worker, 1) == []         # the key is paused for everyone
        fixed_clock.advance(2.01)
    finish(worker, worker.claim(1))
    status = clocked_queue.get_task_status(task_id)
    assert status["status"] == "completed" and status["attempts"] == 1
    assert worker.stats["deferred"] == 6 and worker.stats["failed"] == 0
    state = next(s for s in clocked_queue.limit_states() if s["key"] == KEY)
    assert len(state["last_429s"]) == 6 and state["last_429s"][0]["retry_after"] == 2.0


def test_a_task_waiting_past_the_horizon_fails_rate_limited_out(
        redis_url, namespace, fixed_clock, make_worker):
    from engine import Settings, TaskQueue
    from engine.connection import connect
    settings = Settings.from_mapping({}, heartbeat_interval=0.2, lease_timeout=1.0,
                                     default_retry_delay=0.0, limit_horizon=10.0)
    queue = TaskQueue(connect(redis_url), settings=settings, namespace=namespace, clock=fixed_clock)

    def handler(task):
        raise RateLimited("slow down", retry_after=4.0)

    task_id = submit(queue, 1)[0]
    queue.set_limit(KEY, rpm=6000)
    worker = limited_worker(make_worker, queue, handler=handler)
    outcomes = []
    for _ in range(5):
        finish(worker, worker.claim(1))
        outcomes.append(queue.get_task_status(task_id)["status"])
        fixed_clock.advance(4.01)
    assert outcomes[:3] == ["pending"] * 3
    assert "failed" in outcomes
    status = queue.get_task_status(task_id)
    assert status["status"] == "failed"
    assert "rate limited out" in status["error"]


def test_a_concurrency_cap_holds_tasks_until_a_call_ends(clocked_queue, make_worker):
    clocked_queue.set_limit(KEY, concurrency=2)
    ids = submit(clocked_queue, 4)
    worker = limited_worker(make_worker, clocked_queue)
    running = worker.claim(4)
    assert [t.task_id for t in running] == ids[:2]
    assert claim_ids(worker, 4) == []
    finish(worker, running[:1])                   # one call ends: one more may start
    assert claim_ids(worker, 4) == ids[2:3]


def test_learned_headers_pace_the_key_and_a_spent_allowance_pauses_it(
        clocked_queue, fixed_clock, make_worker):
    signals = iter([ProviderSignal(True, limit_requests=600, remaining_requests=599,
                                   reset_requests_ms=100),
                    ProviderSignal(True, limit_requests=600, remaining_requests=0,
                                   reset_requests_ms=5000)])

    def handler(task):
        task.note_provider(next(signals))
        return "ok"

    ids = submit(clocked_queue, 6)
    worker = limited_worker(make_worker, clocked_queue, handler=handler)
    finish(worker, worker.claim(6))               # slow start: one call, then it learns
    state = next(s for s in clocked_queue.limit_states() if s["key"] == KEY)
    assert state["learned"]["rpm"] == 600 and state["pacing"]["rpm"] == pytest.approx(570)
    fixed_clock.advance(1)
    batch = worker.claim(6)
    assert len(batch) == 1                        # 570/min: ~0.1 s apart, burst of one
    finish(worker, batch)                         # this answer says the allowance is spent
    fixed_clock.advance(1)
    assert claim_ids(worker, 6) == []             # paused until the provider's reset
    fixed_clock.advance(4.1)
    assert claim_ids(worker, 6) == ids[2:3]


def test_without_headers_the_pace_grows_on_answers_and_halves_on_a_429(
        clocked_queue, fixed_clock, make_worker):
    replies = iter(["ok"] * 5 + ["429"])

    def handler(task):
        if next(replies) == "429":
            raise RateLimited("slow down", signal=ProviderSignal(False))
        task.note_provider(ProviderSignal(False))
        return "ok"

    submit(clocked_queue, 6)
    worker = limited_worker(make_worker, clocked_queue, handler=handler)
    paces = []
    for _ in range(6):
        fixed_clock.advance(2)
        finish(worker, worker.claim(1))
        paces.append(next(s for s in clocked_queue.limit_states()
                          if s["key"] == KEY)["pacing"]["rpm"])
    grown = [round(p / 60, 2) for p in paces[:5]]
    assert grown == [1.7, 2.4, 3.1, 3.8, 4.5]     # slow start: +0.7 call/s an answer
    assert paces[5] == pytest.approx(paces[4] / 2)


def test_a_tokens_per_minute_cap_paces_by_the_size_of_the_prompt(
        clocked_queue, fixed_clock, make_worker):
    clocked_queue.set_limit(KEY, tpm=60_000)      # 1,000 tokens a second, 98% of it used
    long_query = "x" * 4000                       # ~1,000 tokens + 256 expected in answer
    for _ in range(3):
        clocked_queue.submit_task(Task(task_type="llm", payload={"i": 0, "q": long_query}))
    worker = limited_worker(make_worker, clocked_queue)
    assert len(worker.claim(3)) == 1
    fixed_clock.advance(0.5)
    assert worker.claim(3) == []
    fixed_clock.advance(0.9)
    assert len(worker.claim(3)) == 1


def test_set_limit_refuses_bad_caps_and_changes_nothing(clocked_queue):
    for bad in ({"rpm": 0}, {"rpm": float("nan")}, {"tpm": -5}, {"concurrency": 1.5},
                {"rpm": "60"}, {"concurrency": True}):
        with pytest.raises(ValidationError):
            clocked_queue.set_limit(KEY, **bad)
    with pytest.raises(ValidationError):
        clocked_queue.set_limit("  ", rpm=1)
    with pytest.raises(ValidationError):
        clocked_queue.set_limit("bad\nkey", rpm=1)
    assert clocked_queue.limit_states() == []
    clocked_queue.set_limit(KEY, rpm=100, concurrency=3)
    clocked_queue.set_limit(KEY, rpm=50)          # None removes the concurrency cap
    state = clocked_queue.limit_states()[0]
    assert state["configured"] == {"rpm": 50.0, "tpm": None, "concurrency": None}


def test_a_damaged_limit_record_limits_nothing_and_breaks_nothing(clocked_queue, make_worker):
    clocked_queue.client.set(clocked_queue.keys.limit(KEY), "not a hash")
    ids = submit(clocked_queue, 2)
    worker = limited_worker(make_worker, clocked_queue)
    assert claim_ids(worker, 2) == ids[:1]        # a slow start, as for a new key
    assert clocked_queue.limit_states()[0]["key"] == KEY


@pytest.mark.parametrize("text, ms", [("1s", 1000), ("6m0s", 360_000), ("120ms", 120),
                                      ("1h2m3.5s", 3_723_500), ("0.5", 500), ("", None),
                                      ("soon", None), ("1x", None), ("-1", None)])
def test_reset_durations_read_as_the_provider_writes_them(text, ms):
    assert parse_duration_ms(text) == ms


def test_headers_become_a_signal_and_a_defer_time():
    signal = signal_from_headers({"X-RateLimit-Limit-Requests": "500",
                                  "x-ratelimit-remaining-requests": "0",
                                  "x-ratelimit-reset-requests": "2s",
                                  "x-ratelimit-limit-tokens": "nonsense"})
    assert signal.headers and signal.limit_requests == 500 and signal.limit_tokens is None
    assert defer_ms(signal, None) == 2000
    assert defer_ms(signal, 7.0) == 7000
    assert defer_ms(signal_from_headers({}), None) == 1000
    assert not signal_from_headers({"content-type": "application/json"}).headers


def test_the_default_key_names_backend_host_and_model_never_credentials():
    assert backend_limit_key("openai", None, "gpt-4o-mini") == "openai api.openai.com gpt-4o-mini"
    key = backend_limit_key("openai", "http://user:secret@127.0.0.1:8080/v1", "m")
    assert key == "openai 127.0.0.1:8080 m"


def test_only_an_admin_sets_a_limit_and_a_console_cannot_run_the_workers_calls(queue):
    from engine.access import AccessDenied, Identity, Role, acting_as, read_audit
    operator = acting_as(queue, Identity("op@example.com", Role.OPERATOR))
    with pytest.raises(AccessDenied):
        operator.set_limit(KEY, rpm=10)
    assert queue.limit_states() == []
    for verb, args in (("settle", ([],)), ("defer", ([],))):
        with pytest.raises(AccessDenied):
            getattr(operator.store, verb)(*args)
    acting_as(queue, Identity("root@example.com", Role.ADMIN)).set_limit(KEY, rpm=10)
    assert queue.limit_states()[0]["configured"]["rpm"] == 10
    assert [(e["action"], e["outcome"]) for e in read_audit(queue)] == \
        [("set_limit", "ok"), ("defer", "denied"), ("settle", "denied"), ("set_limit", "denied")]


def test_a_cancelled_or_reaped_call_frees_its_place_at_once(clocked_queue, fixed_clock, make_worker):
    clocked_queue.set_limit(KEY, concurrency=2)
    ids = submit(clocked_queue, 4)
    worker = limited_worker(make_worker, clocked_queue)
    assert [t.task_id for t in worker.claim(4)] == ids[:2]

    def in_flight():
        return next(s for s in clocked_queue.limit_states() if s["key"] == KEY)["in_flight"]

    assert in_flight() == 2
    clocked_queue.cancel_task(ids[0])                 # an operator, while its call runs
    assert in_flight() == 1
    fixed_clock.advance(5)                            # its worker died: the lease runs out
    clocked_queue.reap_expired_leases()
    assert in_flight() == 0
    again = claim_ids(worker, 4)                      # two places free again
    assert len(again) == 2 and ids[0] not in again and in_flight() == 2


def test_limit_verbs_speak_the_queues_errors_when_redis_is_away(namespace, settings):
    from engine import TaskQueue
    from engine.connection import connect
    from engine.embedded import free_port
    from engine.errors import QueueUnavailable
    away = TaskQueue(connect(f"redis://127.0.0.1:{free_port()}/0"), settings=settings,
                     namespace=namespace)
    with pytest.raises(QueueUnavailable):
        away.set_limit(KEY, rpm=60)
    with pytest.raises(QueueUnavailable):
        away.limit_states()
