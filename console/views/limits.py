"""Limits: each provider limit key (configured, learned and in-use limits, what runs and
waits under it, its last 429 answers), and the budgets of sessions and batches."""
from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from ..components import live, plain_table, redis_guard, updated_caption
from ..runtime import ConsoleContext
from ..shared import shared_read
from ..spend import cost_text, limits_frame, recent_429s, tokens_text

KEY = "limits"
TIME_FORMAT = {"format": "YYYY-MM-DD HH:mm:ss"}


def render(ctx: ConsoleContext) -> None:
    """Draw the Limits page."""
    st.caption("Workers pace model calls to each provider's limits, shared by the whole fleet: "
               "a limit key is a backend, base URL and model (or a name a handler chose). "
               "\"Set\" is what configuration allows (AGENT_LIMIT_RPM, AGENT_LIMIT_TPM, "
               "AGENT_LIMIT_CONCURRENCY), \"learned\" what the provider's rate-limit headers "
               "said, \"in use\" the pace workers keep now. A task deferred by a limit waits "
               "without using an attempt.")
    live(_live_body, ctx, seconds=ctx.refresh_seconds)


def _live_body(ctx: ConsoleContext) -> None:
    with st.container(key=f"{KEY}_live"), redis_guard("the provider limits"):
        _limits(shared_read(ctx.queue, "limit_states", ctx.queue.limit_states))
        _budgets(shared_read(ctx.queue, "budgets", ctx.queue.budgets))
        updated_caption()


def _limits(states: list[dict[str, Any]]) -> None:
    st.markdown("**Limit keys**")
    if not states:
        st.info("No limit key yet: workers record one the first time they call a provider "
                "(or when a limit is configured).", icon=":material/speed:")
        return
    frame = limits_frame(states)
    plain_table(f"{KEY}_table", frame, column_config={
        **_time_columns(frame), "Limit key": st.column_config.TextColumn(width=180),
        "In use/min": st.column_config.TextColumn(width=80),
        "In flight": st.column_config.TextColumn(width=64),
        "Deferred": st.column_config.TextColumn(width=64)})
    answers = recent_429s(states)
    st.markdown("**Last 429 answers** · the provider said \"slow down\"; the key was paused "
                "fleet-wide until its reset")
    if answers.empty:
        st.caption("No 429 answer recorded.")
    else:
        plain_table(f"{KEY}_429s", answers, column_config=_time_columns(answers))


def _budgets(budgets: list[dict[str, Any]]) -> None:
    st.markdown("**Budgets** · once a session or batch has spent its budget, its waiting "
                "tasks fail with reason \"budget exhausted\" (set with `queue.set_budget`)")
    if not budgets:
        st.caption("No budget is set.")
        return
    rows = [{"Id": b["id"], "Exhausted": "yes" if b["exhausted"] else "no",
             "Tokens spent": tokens_text(b["spent_tokens"]), "Token limit": tokens_text(b["tokens"]),
             "Cost spent": cost_text(b["spent_cost"]), "Cost limit": cost_text(b["cost"]),
             "Kind": b["kind"]} for b in budgets]
    plain_table(f"{KEY}_budgets", pd.DataFrame(rows))


def _time_columns(frame: pd.DataFrame) -> dict[str, Any]:
    return {name: st.column_config.DatetimeColumn(**TIME_FORMAT)
            for name in frame.columns if name.endswith("(UTC)")}
