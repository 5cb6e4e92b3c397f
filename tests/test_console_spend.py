"""The console's tokens, cost and limits: the Overview's spend, the task detail's tokens and
cost, the Limits page (AppTest against the session's real Redis), and the formatting."""
from __future__ import annotations

import pandas as pd
import pytest

from console.spend import cost_text, limit_cells, rate_text, recent_429s, tokens_text, usage_cells
from console.testing import cards, facts_of, panel_table, texts
from console.text import md
from engine import AgentTask, TaskQueue
from tests.test_console_pages import open_app, open_page, open_task, table

T = 1_800_000_000_000


def metered(queue, model="gpt-4o-mini", cost=450_000, **options) -> str:
    task_id = queue.submit_task(AgentTask({"query": "q"}, **options))
    assert queue.store.usage([(task_id, model, 1000, 500, 1500, cost)]) == [1]
    return task_id


# -- formatting ----------------------------------------------------------------------------
@pytest.mark.parametrize("dollars, text", [(None, "—"), (0, "$0.00"), (0.00045, "$0.00045"),
                                           (0.5, "$0.50"), (0.123456789, "$0.1235"),
                                           (0.0930096, "$0.09301"), (1e-9, "$0.000000001"),
                                           (1234.5, "$1,234.50"), (float("nan"), "—")])
def test_costs_read_as_dollars_and_nothing_as_a_dash(dollars, text):
    assert cost_text(dollars) == text


def test_numbers_are_formatted_and_empty_ones_read_a_dash():
    assert tokens_text(1234567) == "1,234,567" and tokens_text(None) == "—"
    assert rate_text(None) == "—" and rate_text(1200.0) == "1,200" and rate_text(0.5) == "0.5"
    assert usage_cells({"status": "pending"}) == []
    assert usage_cells({"usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
                        "cost": None}) == [("Tokens", "1,500 (1,000 prompt · 500 completion)"), ("Cost", "—")]


def test_a_limit_key_with_nothing_known_reads_dashes():
    cells = dict(limit_cells({"key": "openai|https://api|gpt-4o", "configured": {"rpm": None,
                              "tpm": None, "concurrency": None}, "learned": {"rpm": None, "tpm": None},
                              "pacing": {"rpm": None}, "in_flight": 0, "deferred": 0,
                              "deferred_until": None, "paused_until": None, "last_429s": []}))
    assert cells == {"Pace in use": "— requests/min", "In flight": "0", "Deferred": "0",
                     "Paused until": "not paused", "Requests/min": "— set · — learned",
                     "Tokens/min": "— set · — learned", "Concurrency cap": "—",
                     "429 answers kept": "0"}
    assert recent_429s([]).empty


# -- pages -----------------------------------------------------------------------------------
def test_the_overview_shows_spend_per_model_and_per_batch(console_env, queue):
    at = open_app()
    assert "No model call has been counted yet." in texts(at)
    metered(queue)
    metered(queue, model="llama3", cost=None)
    at.run()
    metrics = cards(at.main)
    assert metrics["Tokens"] == "3,000" and metrics["Cost"] == "$0.00045"
    assert metrics["Model calls"] == "2" and metrics["Tokens, last hour"] == "3,000"
    models = panel_table(at.main, "Model")
    assert dict(zip(models["Model"], models["Cost"])) == {"gpt-4o-mini": "$0.00045", "llama3": "—"}
    assert "No batch has spent anything yet." in texts(at)


def test_the_task_detail_shows_tokens_and_cost(console_env, queue):
    task_id = metered(queue)
    at = open_page("Tasks")
    open_task(at, task_id)
    facts = facts_of(at)
    assert facts["Tokens"] == "1,500 (1,000 prompt · 500 completion)"
    assert facts["Cost"] == "$0.00045"


def test_the_limits_page_shows_each_key_and_the_budgets(console_env, queue, monkeypatch):
    at = open_page("Limits")
    assert "No limit key yet" in texts(at) and "No budget is set." in texts(at)
    state = {"key": "openai|http://127.0.0.1:9|gpt-4o-mini",
             "configured": {"rpm": 600.0, "tpm": None, "concurrency": 8},
             "learned": {"rpm": 500.0, "tpm": 200000.0}, "pacing": {"rpm": 480.0},
             "in_flight": 3, "deferred": 12, "deferred_until": T + 30_000, "paused_until": None,
             "last_429s": [{"at": T, "retry_after": 1.0}, {"at": T + 5_000, "retry_after": None}]}
    monkeypatch.setattr(TaskQueue, "limit_states", lambda self: [state])
    task_id = metered(queue, session_id="chat-7")
    queue.set_budget(session_id="chat-7", tokens=1000)
    at.run()
    assert not at.exception
    facts = facts_of(at)
    assert f"**{md(state['key'])}**" in texts(at)          # drawn as text, never a link
    assert facts["Pace in use"] == "480 requests/min"
    assert facts["Requests/min"] == "600 set · 500 learned"
    assert facts["Tokens/min"] == "— set · 200,000 learned"
    assert (facts["Concurrency cap"], facts["In flight"]) == ("8", "3")
    assert facts["Deferred"].startswith("12, until ") and facts["Paused until"] == "not paused"
    assert facts["429 answers kept"].startswith("2, last 2027-01-15")
    answers = table(at, "limits_429s")
    assert answers["Retry-After"].tolist() == ["—", "1 s"]          # newest first
    budgets = table(at, "limits_budgets")
    assert budgets.iloc[0].to_dict() == {"Session or batch": "session chat-7", "Tokens": "1,500 of 1,000",
                                         "Cost": "$0.00045 of —", "Exhausted": "yes"}
    assert queue.get_task_status(task_id)["usage"]["total_tokens"] == 1500
    assert isinstance(answers, pd.DataFrame)


def test_the_limits_page_reads_the_queues_own_limit_states(console_env, queue):
    key = "openai|http://127.0.0.1:9/v1|gpt-4o-mini"
    queue.set_limit(key, rpm=600, concurrency=4)
    at = open_page("Limits")
    facts = facts_of(at)
    assert f"**{md(key)}**" in texts(at)
    assert facts["Requests/min"] == "600 set · — learned" and facts["Pace in use"] == "588 requests/min"
    assert (facts["Concurrency cap"], facts["In flight"], facts["Deferred"]) == ("4", "0", "0")
    assert facts["Paused until"] == "not paused" and facts["429 answers kept"] == "0"
    assert "No 429 answer recorded." in texts(at)


def test_a_batch_shows_what_it_spent(console_env, queue):
    from engine import Task
    from engine.batch_reads import child_ids
    from tests.test_console_operators import page
    batch_id = queue.submit_task(Task(task_type="batch_query", payload={"queries": ["a", "b"]}))
    at = page("Batches", batch=batch_id)
    assert (facts_of(at)["Tokens"], facts_of(at)["Cost"]) == ("—", "—")
    queue.store.usage([(child, "gpt-4o-mini", 1000, 500, 1500, 450_000) for child in child_ids(queue, batch_id)])
    at.run()
    assert (facts_of(at)["Tokens"], facts_of(at)["Cost"]) == ("3,000", "$0.0009")


def test_budget_fields_parse_or_say_which_is_wrong():
    from console.spend import budget_limits, budget_outcome
    assert budget_limits("1,000,000", "$2.50") == (1_000_000, 2.5)
    assert budget_limits(" ", "") == (None, None)
    with pytest.raises(ValueError, match="token limit"):
        budget_limits("lots", "")
    assert budget_outcome({"kind": "session", "id": "s", "tokens": None, "cost": None,
                           "spent_tokens": 5, "spent_cost": 0.0, "exhausted": False}) == \
        "The budget of session s is cleared: it may spend without limit."


def test_an_admin_sets_and_clears_a_budget_from_the_limits_page(console_env, queue):
    from console.testing import button
    at = open_page("Limits")
    at.text_input(key="limits_budget_id").input("chat-9")
    at.text_input(key="limits_budget_tokens").input("lots")
    button(at, "Save budget").click().run()
    assert "Nothing was changed: The token limit must be a number" in texts(at)
    assert queue.budgets() == []
    at.text_input(key="limits_budget_tokens").input("2,000")
    at.text_input(key="limits_budget_cost").input("$1.50")
    button(at, "Save budget").click().run()
    assert [(b["id"], b["tokens"], b["cost"]) for b in queue.budgets()] == [("chat-9", 2000, 1.5)]
    assert md("The session chat-9 may spend at most 2,000 tokens and $1.50") in texts(at)
    assert table(at, "limits_budgets")["Session or batch"].tolist() == ["session chat-9"]
    at.selectbox(key="limits_budget_kind").set_value("batch")
    at.text_input(key="limits_budget_id").input("not a batch id!")
    button(at, "Save budget").click().run()
    assert md("Nothing was changed: batch_id must be") in texts(at)
    at.selectbox(key="limits_budget_kind").set_value("session")
    at.text_input(key="limits_budget_id").input("chat-9")
    at.text_input(key="limits_budget_tokens").input("")
    at.text_input(key="limits_budget_cost").input("")
    button(at, "Save budget").click().run()
    assert queue.budgets() == [] and "No budget is set." in texts(at)
