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

from .timefmt import local_text, time_of_day

EMPTY = "—"
SPEND_COLUMNS = ["Tokens", "Cost", "Calls"]


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
    counted first): ``label``, tokens, cost and calls, formatted (four columns: they fit
    a 1024 px window)."""
    rows = [{label: name, "Tokens": tokens_text(t.get("total_tokens")),
             "Cost": cost_text(t.get("cost")), "Calls": tokens_text(t.get("calls"))}
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


def _pair(configured: Any, learned: Any) -> str:
    """A limit as configured and as learned, each "—" when unset or unknown."""
    return f"{rate_text(configured)} set · {rate_text(learned)} learned"


def limit_cells(state: dict[str, Any]) -> list[tuple[str, str]]:
    """One limit key (an item of ``queue.limit_states()``) as label and value pairs: what
    tells a key that flows from one held back first, then its limits and last 429s."""
    configured, learned = state.get("configured") or {}, state.get("learned") or {}
    answers = [a for a in state.get("last_429s") or [] if isinstance(a, dict)]
    deferred = tokens_text(state.get("deferred"))
    if state.get("deferred") and _ms(state.get("deferred_until")):
        deferred += f", until {time_of_day(state['deferred_until'])}"
    last = max((_ms(a.get("at")) or 0 for a in answers), default=0)
    return [
        ("Pace in use", f"{rate_text((state.get('pacing') or {}).get('rpm'))} requests/min"),
        ("In flight", tokens_text(state.get("in_flight"))),
        ("Deferred", deferred),
        ("Paused until", local_text(_ms(state.get("paused_until")), empty="not paused")),
        ("Requests/min", _pair(configured.get("rpm"), learned.get("rpm"))),
        ("Tokens/min", _pair(configured.get("tpm"), learned.get("tpm"))),
        ("Concurrency cap", rate_text(configured.get("concurrency"))),
        ("429 answers kept", tokens_text(len(answers)) +
         (f", last {local_text(last)}" if last else "")),
    ]


def _ms(value: Any) -> int | None:
    """Epoch ms, or None for what is no time."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return int(value)


def _seconds(value: Any) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return EMPTY
    return f"{value:g} s"


def recent_429s(states: Sequence[dict[str, Any]], most: int = 50) -> pd.DataFrame:
    """The last 429 answers of every key, newest first: when (a "(UTC)" column the tables
    show in the operator's zone), which key, the Retry-After the provider sent."""
    rows = [{"At (UTC)": _ms(a.get("at")), "Limit key": str(state.get("key") or EMPTY),
             "Retry-After": _seconds(a.get("retry_after"))}
            for state in states for a in state.get("last_429s") or [] if isinstance(a, dict)]
    rows.sort(key=lambda r: r["At (UTC)"] or 0, reverse=True)
    for row in rows:
        row["At (UTC)"] = None if row["At (UTC)"] is None else pd.Timestamp(row["At (UTC)"], unit="ms", tz="UTC")
    return pd.DataFrame(rows[:most], columns=["At (UTC)", "Limit key", "Retry-After"])


def budget_limits(tokens_text_in: str | None, cost_text_in: str | None) -> tuple[int | None, float | None]:
    """The budget form's two fields as ``set_budget``'s ``tokens`` and ``cost`` (blank:
    None, no such limit); ``ValueError`` saying which field is not a number. Thousands
    separators and a leading "$" are allowed ("1,000,000", "$2.50")."""
    def number(text: str | None, name: str, whole: bool) -> Any:
        text = (text or "").strip().replace(",", "").replace("_", "").removeprefix("$").strip()
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{name} must be a number, or blank for no limit; got {text!r}") from None
        if whole and value.is_integer():
            return int(value)
        return value
    return number(tokens_text_in, "The token limit", True), number(cost_text_in, "The cost limit", False)


def budget_outcome(budget: dict[str, Any]) -> str:
    """What a set budget now says, in one sentence."""
    limits = [f"{tokens_text(budget['tokens'])} tokens" if budget.get("tokens") is not None else "",
              cost_text(budget["cost"]) if budget.get("cost") is not None else ""]
    limits = [text for text in limits if text]
    owner = f"{budget['kind']} {budget['id']}"
    if not limits:
        return f"The budget of {owner} is cleared: it may spend without limit."
    return (f"The {owner} may spend at most {' and '.join(limits)}; it has spent "
            f"{tokens_text(budget['spent_tokens'])} tokens and {cost_text(budget['spent_cost'])}"
            + (" (exhausted: its waiting tasks will fail)." if budget.get("exhausted") else "."))
