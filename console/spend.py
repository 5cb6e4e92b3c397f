"""Tokens, cost and provider limits as the console shows them (no Streamlit here).

The engine reads them (``queue.usage_totals()``, ``queue.limit_states()``); these helpers
turn its dicts into formatted text and tables: numbers with thousands separators, costs
in dollars, times as UTC timestamps the tables show in the operator's zone, and "—" for
what is empty or unknown.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

EMPTY = "—"
SPEND_COLUMNS = ["Calls", "Prompt tokens", "Completion tokens", "Total tokens", "Cost"]
# What tells a key that flows from one held back first; the limits' detail scrolls.
LIMIT_COLUMNS = ["Limit key", "In use/min", "In flight", "Deferred", "Paused until (UTC)",
                 "Deferred until (UTC)", "Requests/min", "Tokens/min", "Concurrency",
                 "429s (last)", "Last 429 (UTC)"]


def tokens_text(value: Any) -> str:
    """``"1,234"``; "—" when there is no count."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return EMPTY
    return f"{int(value):,}"


def cost_text(dollars: Any) -> str:
    """``"$12.34"``, ``"$0.09301"``, ``"$0.00045"`` (under a dollar, four significant
    digits), or "—" when there is no cost (no call had a price)."""
    if dollars is None or isinstance(dollars, bool) or not isinstance(dollars, (int, float)) \
            or dollars != dollars:
        return EMPTY
    if dollars == 0:
        return "$0.00"
    if abs(dollars) >= 1:
        return f"${dollars:,.2f}"
    # Four significant digits, at most nine decimals (nanodollars), trailing zeros dropped.
    decimals = min(9, 3 - math.floor(math.log10(abs(dollars))))
    whole, _, fraction = f"{dollars:.{decimals}f}".partition(".")
    fraction = fraction.rstrip("0")
    return f"${whole}.{fraction.ljust(2, '0')}"


def rate_text(value: Any) -> str:
    """A limit (requests or tokens per minute, or a concurrency): ``"1,200"``, or "—"
    when unset or unknown; fractions of one are kept (``"0.5"``)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return EMPTY
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:,.2g}"


def usage_cells(record: dict[str, Any]) -> list[tuple[str, str]]:
    """The task detail's tokens and cost, when its model calls were counted: tokens with
    what was sent and what came back, and the cost ("—" when the model has no price)."""
    usage = record.get("usage")
    if not isinstance(usage, dict):
        return []
    tokens = (f"{tokens_text(usage.get('total_tokens'))} ({tokens_text(usage.get('prompt_tokens'))} "
              f"prompt · {tokens_text(usage.get('completion_tokens'))} completion)")
    return [("Tokens", tokens), ("Cost", cost_text(record.get("cost")))]


def spend_frame(named: dict[str, dict[str, Any]], label: str) -> pd.DataFrame:
    """One row per model (or batch, or session), in the engine's order (most recently
    counted first): ``label``, calls, tokens, cost, every number formatted."""
    rows = [{label: name, "Calls": tokens_text(t.get("calls")),
             "Prompt tokens": tokens_text(t.get("prompt_tokens")),
             "Completion tokens": tokens_text(t.get("completion_tokens")),
             "Total tokens": tokens_text(t.get("total_tokens")), "Cost": cost_text(t.get("cost"))}
            for name, t in named.items()]
    return pd.DataFrame(rows, columns=[label, *SPEND_COLUMNS])


def spend_summary(totals: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The Overview's spend cards: (label, value, help)."""
    total = totals.get("total") or {}
    hour = [m for m in totals.get("minutes") or []]
    hour_tokens = sum(int(m.get("total_tokens") or 0) for m in hour)
    priced = [m["cost"] for m in hour if m.get("cost") is not None]
    return [
        ("Tokens", tokens_text(total.get("total_tokens")),
         "Prompt and completion tokens of every model call counted"),
        ("Cost", cost_text(total.get("cost")),
         "From the price table (AGENT_PRICES); calls to models without a price count tokens only"),
        ("Model calls", tokens_text(total.get("calls")), "Calls whose tokens were counted"),
        ("Tokens, last hour", tokens_text(hour_tokens), "Counted in the last 60 minutes"),
        ("Cost, last hour", cost_text(sum(priced)) if priced else EMPTY, "Counted in the last 60 minutes"),
    ]


def _time(ms: Any) -> Any:
    """Epoch ms as a UTC timestamp for a "(UTC)" column; None for no time."""
    if ms is None or isinstance(ms, bool) or not isinstance(ms, (int, float)) or ms <= 0:
        return None
    return pd.Timestamp(int(ms), unit="ms", tz="UTC")


def _pair(configured: Any, learned: Any) -> str:
    """A limit as configured and as learned, each "—" when unset or unknown."""
    return f"{rate_text(configured)} set · {rate_text(learned)} learned"


def limits_frame(states: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per limit key (``queue.limit_states()``): its configured, learned and
    in-use limits, what runs and waits under it, and its last 429 answers."""
    rows = []
    for state in states:
        configured, learned = state.get("configured") or {}, state.get("learned") or {}
        pacing = state.get("pacing") or {}
        answers = [a for a in state.get("last_429s") or [] if isinstance(a, dict)]
        rows.append({
            "Limit key": str(state.get("key") or EMPTY),
            "In use/min": rate_text(pacing.get("rpm")),
            "Requests/min": _pair(configured.get("rpm"), learned.get("rpm")),
            "Tokens/min": _pair(configured.get("tpm"), learned.get("tpm")),
            "Concurrency": rate_text(configured.get("concurrency")),
            "In flight": tokens_text(state.get("in_flight")),
            "Deferred": tokens_text(state.get("deferred")),
            "Deferred until (UTC)": _time(state.get("deferred_until")),
            "Paused until (UTC)": _time(state.get("paused_until")),
            "429s (last)": tokens_text(len(answers)),
            "Last 429 (UTC)": _time(max((a.get("at") or 0 for a in answers), default=None)),
        })
    return pd.DataFrame(rows, columns=LIMIT_COLUMNS)


def _seconds(value: Any) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return EMPTY
    return f"{value:g} s"


def recent_429s(states: Sequence[dict[str, Any]], most: int = 50) -> pd.DataFrame:
    """The last 429 answers of every key, newest first: when, which key, Retry-After."""
    rows = [{"At (UTC)": _time(a.get("at")), "Limit key": str(state.get("key") or EMPTY),
             "Retry-After": _seconds(a.get("retry_after"))}
            for state in states for a in state.get("last_429s") or [] if isinstance(a, dict)]
    rows.sort(key=lambda r: r["At (UTC)"] or pd.Timestamp(0, tz="UTC"), reverse=True)
    return pd.DataFrame(rows[:most], columns=["At (UTC)", "Limit key", "Retry-After"])
