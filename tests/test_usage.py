"""Tokens and cost (engine/usage.py, engine/pricing.py, usage.lua): counted per task, model,
batch, session and minute in whole nanodollars, read back in one call; budgets."""
from __future__ import annotations

import pytest

import engine.batch  # noqa: F401  (registers the BATCH_QUERY fan-out)
from engine import Settings, Task, TaskType
from engine.batch_reads import child_ids
from engine.errors import ConfigurationError, ValidationError
from engine.pricing import cost_nanos, parse_prices, usage_item

PRICES = {"gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.0)}
T0 = 1_800_000_000_000             # a whole minute: 30,000,000 × 60,000 ms


def query(queue, **options) -> str:
    return queue.submit_task(Task(task_type=TaskType.AGENT_QUERY, payload={"query": "q"}, **options))


def item(task_id, model="gpt-4o-mini", prompt=1000, completion=500):
    return usage_item(task_id, {"model": model, "usage": {"prompt_tokens": prompt,
                                                          "completion_tokens": completion}}, PRICES)


# -- prices ------------------------------------------------------------------------------
def test_a_cost_is_whole_nanodollars_from_dollars_per_million_tokens():
    # 1,000 × $0.15/1M + 500 × $0.60/1M = $0.00015 + $0.0003 = $0.00045
    assert cost_nanos("gpt-4o-mini", 1000, 500, PRICES) == 450_000
    assert cost_nanos("gpt-4o-mini-2024-07-18", 1000, 500, PRICES) == 450_000   # a dated version
    assert cost_nanos("llama3", 1000, 500, PRICES) is None
    assert cost_nanos(None, 1000, 500, PRICES) is None


def test_the_price_table_parses_from_configuration():
    settings = Settings.from_mapping({"AGENT_PRICES": '{"gpt-4o-mini": {"input": 0.15, "output": 0.6}}'})
    assert settings.price_table == {"gpt-4o-mini": (0.15, 0.6)}
    assert Settings.from_mapping({}).price_table == {}


@pytest.mark.parametrize("text, words", [
    ("{not json", "not JSON"),
    ('["gpt-4o"]', "JSON object"),
    ('{"gpt-4o": 2.5}', '"input"'),
    ('{"gpt-4o": {"input": 2.5}}', '"output"'),
    ('{"gpt-4o": {"input": -1, "output": 1}}', "'input'"),
    ('{"gpt-4o": {"input": "2.5", "output": 1}}', "'input'"),
    ('{"gpt-4o": {"input": 1, "output": 1e400}}', "'output'"),
    ('{"": {"input": 1, "output": 1}}', "model name"),
])
def test_a_bad_price_table_is_a_clear_configuration_error(text, words):
    with pytest.raises(ConfigurationError, match="AGENT_PRICES") as caught:
        Settings.from_mapping({"AGENT_PRICES": text})
    assert words in str(caught.value)
    with pytest.raises(ConfigurationError):
        parse_prices(text)


def test_a_result_without_usable_counts_reports_nothing():
    assert usage_item("t", {"answer": "x"}, PRICES) is None
    assert usage_item("t", "text", PRICES) is None
    assert usage_item("t", {"usage": {"prompt_tokens": "12", "completion_tokens": 3}}, PRICES) is None
    assert usage_item("t", {"usage": {"prompt_tokens": -1, "completion_tokens": 3}}, PRICES) is None
    assert usage_item("t", {"usage": {"prompt_tokens": 2, "completion_tokens": 3}}, PRICES) == \
        ("t", "", 2, 3, 5, None)


# -- counting ----------------------------------------------------------------------------
def test_a_task_its_model_its_session_and_the_minute_count_each_call(clocked_queue, fixed_clock):
    queue = clocked_queue
    assert fixed_clock.now_ms() == T0
    fixed_clock.advance(5)
    task_id = query(queue, session_id="chat 1")
    assert queue.store.usage([item(task_id), item(task_id, model="gpt-4o", prompt=100, completion=10)]) == [1, 1]
    status = queue.get_task_status(task_id)
    assert status["usage"] == {"prompt_tokens": 1100, "completion_tokens": 510, "total_tokens": 1610}
    # 450,000 + 100 × 2,500 + 10 × 10,000 = 800,000 nanodollars
    assert status["cost"] == pytest.approx(0.0008)
    assert queue.get_task(task_id)["cost"] == pytest.approx(0.0008)
    totals = queue.usage_totals(minutes=3)
    assert totals["total"] == {"prompt_tokens": 1100, "completion_tokens": 510, "total_tokens": 1610,
                               "cost": pytest.approx(0.0008), "calls": 2}
    assert totals["models"]["gpt-4o-mini"]["total_tokens"] == 1500
    assert totals["models"]["gpt-4o"]["cost"] == pytest.approx(0.00035)
    assert totals["sessions"]["chat 1"]["calls"] == 2
    assert totals["batches"] == {}
    assert [m["minute"] for m in totals["minutes"]] == [T0 - 120_000, T0 - 60_000, T0]
    assert [m["calls"] for m in totals["minutes"]] == [0, 0, 2]
    assert queue.usage(session_id="chat 1")["total_tokens"] == 1610
    assert queue.usage(model="gpt-4o")["calls"] == 1
    assert queue.usage()["calls"] == 2


def test_retries_add_up_in_the_task(queue):
    task_id = query(queue)
    queue.store.usage([item(task_id)])
    queue.store.usage([item(task_id)])        # a second attempt, or a lost lease's late report
    assert queue.get_task_status(task_id)["usage"]["total_tokens"] == 3000
    assert queue.usage()["calls"] == 2


def test_a_batch_counts_its_children_and_expires_after_twice_the_result_ttl(queue, redis_client):
    batch_id = queue.submit_task(Task(task_type=TaskType.BATCH_QUERY, payload={"queries": ["a", "b"]}))
    children = child_ids(queue, batch_id)
    assert queue.store.usage([item(c) for c in children]) == [1, 1]
    assert queue.usage(batch_id=batch_id) == {"prompt_tokens": 2000, "completion_tokens": 1000,
                                              "total_tokens": 3000, "cost": pytest.approx(0.0009), "calls": 2}
    assert batch_id in queue.usage_totals()["batches"]
    ttl_ms = redis_client.pttl(queue.keys.usage("batch", batch_id))
    assert 2 * queue.settings.result_ttl * 1000 - 60_000 < ttl_ms <= 2 * queue.settings.result_ttl * 1000


def test_an_unknown_model_counts_tokens_without_cost(queue):
    task_id = query(queue)
    queue.store.usage([item(task_id, model="llama3")])
    status = queue.get_task_status(task_id)
    assert status["usage"]["total_tokens"] == 1500 and status["cost"] is None
    assert queue.usage(model="llama3") == {"prompt_tokens": 1000, "completion_tokens": 500,
                                           "total_tokens": 1500, "cost": None, "calls": 1}
    assert queue.usage()["cost"] is None


def test_a_report_for_a_task_that_is_gone_counts_nothing(queue):
    assert queue.store.usage([item("no-such-task")]) == [0]
    assert queue.usage()["calls"] == 0
    assert "usage" not in queue.get_task_status(query(queue))    # never metered


def test_usage_totals_is_one_round_trip(queue, monkeypatch):
    task_id = query(queue, session_id="s")
    queue.store.usage([item(task_id)])
    calls = []
    run = queue.store.wire.run
    monkeypatch.setattr(queue.store.wire, "run", lambda *a, **k: calls.append(a) or run(*a, **k))
    monkeypatch.setattr(queue.client, "execute_command",
                        lambda *a, **k: pytest.fail(f"a second call: {a[0]}"))
    totals = queue.usage_totals(minutes=60)
    assert len(calls) == 1 and len(totals["minutes"]) == 60
    assert totals["sessions"]["s"]["total_tokens"] == 1500


def test_usage_reads_refuse_bad_arguments(queue):
    for minutes in (0, -1, 1501, 2.5, True):
        with pytest.raises(ValidationError, match="minutes"):
            queue.usage_totals(minutes=minutes)
    with pytest.raises(ValidationError, match="one of"):
        queue.usage(batch_id="b", model="m")
    with pytest.raises(ValidationError, match="batch_id"):
        queue.usage(batch_id="a b")


# -- budgets -----------------------------------------------------------------------------
def test_a_budget_is_set_read_and_cleared(queue):
    budget = queue.set_budget(session_id="chat:1", tokens=2000, cost=0.5)
    assert budget == {"kind": "session", "id": "chat:1", "tokens": 2000, "cost": 0.5,
                      "spent_tokens": 0, "spent_cost": 0.0, "exhausted": False}
    queue.store.usage([item(query(queue, session_id="chat:1")), item(query(queue, session_id="chat:1"))])
    assert queue.budgets() == [{"kind": "session", "id": "chat:1", "tokens": 2000, "cost": 0.5,
                                "spent_tokens": 3000, "spent_cost": pytest.approx(0.0009),
                                "exhausted": True}]
    queue.set_budget(batch_id="b-1", cost=1)
    queue.set_budget(session_id="chat:1")         # both limits cleared
    assert [(b["kind"], b["id"], b["tokens"], b["cost"]) for b in queue.budgets()] == \
        [("batch", "b-1", None, 1.0)]


@pytest.mark.parametrize("kwargs, words", [
    ({"tokens": 10}, "exactly one"),
    ({"session_id": "s", "batch_id": "b", "tokens": 10}, "exactly one"),
    ({"session_id": "s", "tokens": 0}, "tokens"),
    ({"session_id": "s", "tokens": float("inf")}, "tokens"),
    ({"session_id": "s", "tokens": True}, "tokens"),
    ({"session_id": "s", "cost": -1}, "cost"),
    ({"session_id": "s", "cost": float("nan")}, "cost"),
    ({"session_id": "s", "cost": "1"}, "cost"),
    ({"batch_id": "a b", "tokens": 1}, "batch_id"),
    ({"session_id": "a\nb", "tokens": 1}, "session_id"),
])
def test_a_bad_budget_is_refused_and_nothing_is_written(queue, redis_client, kwargs, words):
    with pytest.raises(ValidationError, match=words):
        queue.set_budget(**kwargs)
    assert not redis_client.exists(queue.keys.budgets)


def test_budget_spent_in_lua_reads_the_limit_and_the_spend(queue, redis_client):
    """lib.lua's budget_spent, which claim.lua calls: true once a limit is reached."""
    from engine.scripting import library_blocks
    source = "".join(text for names, text in library_blocks() if "budget_spent" in names)
    script = source + "\nreturn budget_spent(KEYS[1], KEYS[2], ARGV[1], ARGV[2]) and 1 or 0"
    k = queue.keys

    def spent(kind, owner):
        return redis_client.eval(script, 2, k.budgets, k.usage_prefix, kind, owner)

    task_id = query(queue, session_id="s")
    assert spent("session", "s") == 0                     # no budget at all
    queue.set_budget(session_id="s", tokens=1500)
    assert spent("session", "s") == 0                     # nothing spent yet
    queue.store.usage([item(task_id)])
    assert spent("session", "s") == 1                     # 1,500 of 1,500
    assert spent("session", "other") == 0
    queue.set_budget(session_id="s", cost=0.001)
    assert spent("session", "s") == 0                     # $0.00045 of $0.001
    queue.store.usage([item(task_id), item(task_id)])
    assert spent("session", "s") == 1
    assert spent("session", "") == 0


def test_only_an_admin_sets_a_budget_and_it_is_audited(queue):
    from engine.access import AccessDenied, Identity, Role, acting_as, read_audit
    with pytest.raises(AccessDenied):
        acting_as(queue, Identity("op@example.com", Role.OPERATOR)).set_budget(session_id="s", tokens=5)
    assert queue.budgets() == []
    acting_as(queue, Identity("root@example.com", Role.ADMIN)).set_budget(session_id="s", tokens=5)
    assert queue.budgets()[0]["tokens"] == 5
    assert [(e["action"], e["outcome"]) for e in read_audit(queue)] == \
        [("set_budget", "ok"), ("set_budget", "denied")]
    operator = acting_as(queue, Identity("op@example.com", Role.OPERATOR))
    with pytest.raises(AccessDenied):          # counting spend is a worker's call, not a console's
        operator.store.usage([item(query(queue))])
    assert queue.usage()["calls"] == 0


def test_minute_totals_expire_like_the_stats_and_batches_leave_the_index_with_their_totals(
        clocked_queue, fixed_clock, redis_client):
    queue = clocked_queue
    task_id = query(queue, session_id="old")
    queue.store.usage([item(task_id)])
    minute = queue.keys.usage_minute(T0 // 60000)
    assert 0 < redis_client.pttl(minute) <= 25 * 3600 * 1000
    ttl = 2 * queue.settings.result_ttl
    fixed_clock.advance(ttl + 60)                 # the session's totals have expired by now
    queue.store.usage([item(query(queue, session_id="new"))])
    assert list(queue.usage_totals()["sessions"]) == ["new"]


def test_hand_edited_records_neither_break_the_count_nor_the_reads(queue, redis_client):
    task_id = query(queue)
    redis_client.hset(queue.keys.task(task_id), "prompt_tokens", "lots")
    redis_client.set(queue.keys.task("a-string"), "not a hash")
    redis_client.set(queue.keys.usage("session", "broken"), "not a hash")
    redis_client.set(queue.keys.usage_index["model"], "not a sorted set")
    broken = query(queue, session_id="broken")
    assert queue.store.usage([item(task_id), item("a-string"), item(broken)]) == [1, 0, 1]
    assert queue.get_task_status(broken)["usage"]["total_tokens"] == 1500
    redis_client.delete(queue.keys.usage_index["model"])
    redis_client.zadd(queue.keys.usage_index["model"], {"gpt-4o-mini": 1})
    assert queue.usage()["total_tokens"] == 3000          # the totals counted both calls
    status = queue.get_task_status(task_id)
    assert "usage" in status["corrupt"] and "usage" not in status
    redis_client.set(queue.keys.usage("model", "gpt-4o-mini"), "not a hash")
    assert queue.usage_totals()["models"]["gpt-4o-mini"]["calls"] == 0
    assert queue.usage(model="gpt-4o-mini")["calls"] == 0
    redis_client.hset(queue.keys.budgets, mapping={"session:s:tokens": "many", "nonsense": "1"})
    assert queue.budgets() == []


def test_a_worker_counts_what_its_handlers_results_report(redis_url, namespace):
    from engine import TaskQueue, TaskWorker
    from engine.connection import connect
    from tests.fixtures_engine import TEST_SETTINGS
    settings = Settings.from_mapping(
        {"AGENT_PRICES": '{"gpt-4o-mini": {"input": 0.15, "output": 0.6}}'}, **TEST_SETTINGS)
    queue = TaskQueue(connect(redis_url), settings=settings, namespace=namespace)
    worker = TaskWorker(queue, concurrency=2)
    answers = {"priced": ("gpt-4o-mini-2024-07-18", 1000), "unpriced": ("llama3", 10),
               "demo": ("demo", 0)}

    @worker.handler("ask")
    def ask(task):
        model, prompt = answers[task.payload["kind"]]
        return {"answer": "a", "model": model,
                "usage": {"prompt_tokens": prompt, "completion_tokens": prompt // 2,
                          "total_tokens": prompt + prompt // 2}}

    ids = {kind: queue.submit_task(Task(task_type="ask", payload={"kind": kind}, session_id="s"))
           for kind in answers}
    worker.start(burst=True)
    priced, unpriced, demo = (queue.get_task_status(ids[k]) for k in ("priced", "unpriced", "demo"))
    assert priced["usage"] == {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
    assert priced["cost"] == pytest.approx(0.00045)
    assert unpriced["usage"]["total_tokens"] == 15 and unpriced["cost"] is None
    assert "usage" not in demo                    # zeros: no model was called
    totals = queue.usage_totals()
    assert totals["sessions"]["s"]["calls"] == 2
    assert set(totals["models"]) == {"gpt-4o-mini-2024-07-18", "llama3"}
    assert totals["total"]["cost"] == pytest.approx(0.00045)


def test_once_a_budget_is_spent_the_waiting_tasks_fail_at_claim(queue, make_worker):
    """claim.lua's check (budget_spent): the session's and the batch's own budgets."""
    worker = make_worker()
    ran = []
    worker.register_handler("ask", lambda task: ran.append(task.task_id) or "ok")
    first = queue.submit_task(Task(task_type="ask", payload={}, session_id="capped"))
    queue.set_budget(session_id="capped", tokens=1500, cost=10)
    worker.start(burst=True)
    assert ran == [first]                                   # nothing spent yet: it runs
    queue.store.usage([item(first)])                        # 1,500 of 1,500 tokens
    late = queue.submit_task(Task(task_type="ask", payload={}, session_id="capped"))
    free = queue.submit_task(Task(task_type="ask", payload={}, session_id="other"))
    worker.start(burst=True)
    assert ran == [first, free]
    status = queue.get_task_status(late)
    assert status["status"] == "failed" and status["reason"] == "budget exhausted"
    assert status["error"] == "budget exhausted: the session's budget is spent"
    assert queue.budgets()[0]["exhausted"]
    queue.set_budget(session_id="capped", tokens=3000)      # raised: runs again
    queue.retry_task(late)
    worker.start(burst=True)
    assert ran == [first, free, late]


def test_a_batch_budget_stops_the_rest_of_the_batch(queue, make_worker):
    batch_id = queue.submit_task(Task(task_type=TaskType.BATCH_QUERY, payload={"queries": ["a", "b", "c"]}))
    first, *rest = child_ids(queue, batch_id)
    queue.set_budget(batch_id=batch_id, cost=0.0004)
    queue.store.usage([item(first)])                        # $0.00045 of $0.0004
    worker = make_worker()
    worker.register_handler(TaskType.AGENT_QUERY, lambda task: "answer")
    worker.start(burst=True)
    statuses = [queue.get_task_status(i) for i in rest]
    assert [s["status"] for s in statuses] == ["failed", "failed"]
    assert {s["error"] for s in statuses} == {"budget exhausted: the batch's budget is spent"}
    assert queue.usage(batch_id=batch_id)["cost"] == pytest.approx(0.00045)


def test_the_openai_backend_through_a_worker_counts_every_call(redis_url, namespace):
    """End to end: a worker running the agent on an OpenAI-compatible server (a local one,
    tests/support/limited_chat_server.py) counts each call's tokens and cost once."""
    from engine import AgentTask, TaskQueue, TaskWorker
    from engine.agent import register_handlers
    from engine.connection import connect
    from tests.fixtures_engine import TEST_SETTINGS
    from tests.support.limited_chat_server import LimitedChatServer
    with LimitedChatServer(completion_tokens=40) as server:
        settings = Settings.from_mapping({
            "AGENT_BACKEND": "openai", "AGENT_OPENAI_BASE_URL": server.url,
            "AGENT_OPENAI_API_KEY": "test", "AGENT_MODEL": "gpt-4o-mini",
            "AGENT_PRICES": '{"gpt-4o-mini": {"input": 0.15, "output": 0.6}}'}, **TEST_SETTINGS)
        queue = TaskQueue(connect(redis_url), settings=settings, namespace=namespace)
        ids = queue.submit_tasks([AgentTask({"query": f"question {i} " + "word " * i},
                                            session_id="e2e") for i in range(12)])
        worker = TaskWorker(queue, concurrency=4)
        register_handlers(worker)
        worker.start(burst=True)
        assert server.accepted == 12 and server.rejected_429 == 0
    statuses = [queue.get_task_status(i) for i in ids]
    assert {s["status"] for s in statuses} == {"completed"}
    assert all(s["usage"]["completion_tokens"] == 40 and s["usage"]["prompt_tokens"] > 0 for s in statuses)
    expected = sum(cost_nanos("gpt-4o-mini", s["usage"]["prompt_tokens"], 40, PRICES) for s in statuses)
    totals = queue.usage_totals()
    assert totals["sessions"]["e2e"]["calls"] == totals["total"]["calls"] == 12
    assert totals["total"]["total_tokens"] == sum(s["usage"]["total_tokens"] for s in statuses)
    assert totals["total"]["cost"] == pytest.approx(expected / 1e9)
    assert list(totals["models"]) == ["gpt-4o-mini"]
