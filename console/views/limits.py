"""Limits: each provider limit key (the pace in use, what runs and waits under it, its
configured and learned limits, its last 429 answers), and the budgets of sessions and
batches."""
from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from engine.errors import AccessDenied

from ..components import (REDIS_DOWN, facts, flash, live, plain_table, redis_guard, show_flash,
                          updated_caption)
from ..runtime import ConsoleContext
from ..shared import queue_changed, shared_read
from ..spend import (budget_limits, budget_outcome, cost_text, limit_cells, recent_429s,
                     tokens_text)
from ..text import md

KEY = "limits"
KEYS_SHOWN = 50          # limit keys drawn, most recently active first
BUDGET = f"{KEY}_budget"  # the budget form (an admin's control: console/identity.py)


def render(ctx: ConsoleContext) -> None:
    """Draw the Limits page."""
    st.caption("Workers pace model calls to each provider's limits, shared by the whole fleet: "
               "a limit key is a backend, base URL and model (or a name a handler chose). "
               "\"Set\" is what configuration allows (AGENT_LIMIT_RPM, AGENT_LIMIT_TPM, "
               "AGENT_LIMIT_CONCURRENCY, or `queue.set_limit`), \"learned\" what the "
               "provider's rate-limit headers said, the pace in use what workers keep now. A "
               "task deferred by a limit waits without using an attempt.")
    live(_live_body, ctx, seconds=ctx.refresh_seconds)
    _budget_form(ctx)


def _live_body(ctx: ConsoleContext) -> None:
    with st.container(key=f"{KEY}_live"), redis_guard("the provider limits"):
        _limits(shared_read(ctx.queue, "limit_states", ctx.queue.limit_states))
        _budgets(shared_read(ctx.queue, "budgets", ctx.queue.budgets))
        updated_caption()


def _limits(states: list[dict[str, Any]]) -> None:
    st.markdown("**Limit keys** · most recently active first")
    if not states:
        st.info("No limit key yet: workers record one the first time they call a provider "
                "(or when a limit is configured).", icon=":material/speed:")
        return
    for index, state in enumerate(states[:KEYS_SHOWN]):
        with st.container(border=True, key=f"{KEY}_key_{index}"):
            st.markdown(f"**{md(state.get('key'))}**")
            facts(limit_cells(state), per_row=4)
    if len(states) > KEYS_SHOWN:
        st.caption(f"{len(states) - KEYS_SHOWN:,} less active keys are not shown.")
    answers = recent_429s(states)
    st.markdown("**Last 429 answers** · the provider said \"slow down\"; the key was paused "
                "fleet-wide until its reset")
    if answers.empty:
        st.caption("No 429 answer recorded.")
    else:
        plain_table(f"{KEY}_429s", answers, column_config={
            "At (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")})


def _budgets(budgets: list[dict[str, Any]]) -> None:
    st.markdown("**Budgets** · once a session or batch has spent its budget, its waiting "
                "tasks fail with reason \"budget exhausted\" (set with `queue.set_budget`)")
    if not budgets:
        st.caption("No budget is set.")
        return
    rows = [{"Session or batch": f"{b['kind']} {b['id']}",
             "Tokens": f"{tokens_text(b['spent_tokens'])} of {tokens_text(b['tokens'])}",
             "Cost": f"{cost_text(b['spent_cost'])} of {cost_text(b['cost'])}",
             "Exhausted": "yes" if b["exhausted"] else "no"} for b in budgets]
    # Widths that fit the main area of a 1024 px window (about 560 px); long names wrap out.
    plain_table(f"{KEY}_budgets", pd.DataFrame(rows), column_config={
        "Session or batch": st.column_config.TextColumn(width=190),
        "Tokens": st.column_config.TextColumn(width=140),
        "Cost": st.column_config.TextColumn(width=130),
        "Exhausted": st.column_config.TextColumn(width=72)})


def _budget_form(ctx: ConsoleContext) -> None:
    with st.container(key=BUDGET):
        with st.expander("Set or clear a budget"):
            with st.form(f"{BUDGET}_form", border=False):
                kind, owner = st.columns([1, 3])
                kind.selectbox("For a", ["session", "batch"], key=f"{BUDGET}_kind")
                owner.text_input("Session id or batch id", key=f"{BUDGET}_id")
                tokens, cost = st.columns(2)
                tokens.text_input("Token limit", key=f"{BUDGET}_tokens", placeholder="no limit",
                                  help="Prompt and completion tokens, e.g. 1,000,000")
                cost.text_input("Cost limit (dollars)", key=f"{BUDGET}_cost",
                                placeholder="no limit", help="From AGENT_PRICES, e.g. 2.50")
                st.caption("Both blank clears the budget. A new limit replaces the old one; "
                           "what was spent stays counted.")
                st.form_submit_button("Save budget", type="primary", on_click=_save_budget,
                                      args=(ctx,))
            show_flash(BUDGET)


def _save_budget(ctx: ConsoleContext) -> None:
    state = st.session_state
    owner = (state.get(f"{BUDGET}_id") or "").strip()
    if not owner:
        flash(BUDGET, "error", "Name the session or batch the budget is for.")
        return
    try:
        tokens, cost = budget_limits(state.get(f"{BUDGET}_tokens"), state.get(f"{BUDGET}_cost"))
        which = {"session_id" if state.get(f"{BUDGET}_kind") == "session" else "batch_id": owner}
        budget = ctx.queue.set_budget(**which, tokens=tokens, cost=cost)
    except (ValueError, AccessDenied) as exc:       # ValidationError is a ValueError
        flash(BUDGET, "error", f"Nothing was changed: {exc}")
        return
    except REDIS_DOWN as exc:
        flash(BUDGET, "error", f"Nothing was changed: Redis did not answer ({exc}).")
        return
    queue_changed(ctx.queue)        # every session's next read shows the new budget
    flash(BUDGET, "success", budget_outcome(budget))
