"""Tokens and cost: what model calls spent, per task, model, batch, session and minute, and
budgets that stop a session or a batch once it has spent its share.

The worker counts each call a handler reports (``usage`` and ``model`` in its result, as
the openai backend returns them) with ``Store.usage`` (usage.lua) in the flush that
completes the task; prices come from ``AGENT_PRICES`` (engine/pricing.py). The totals are
kept in Redis as they are counted, never recomputed by scanning tasks, so reading them
costs one round trip however many tasks ran. Budgets are limits in ``{ns}:budgets``;
claim.lua fails the remaining tasks of a session or batch whose spend has reached its
limit with reason "budget exhausted" (``budget_spent`` in lib.lua).

``QueueUsage`` holds the reads and the budget verb; ``TaskQueue`` inherits it.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import redis

from .errors import ValidationError, translate_redis_errors
from .keys import Keys
from .pricing import (NANOS_PER_DOLLAR, TOKEN_FIELDS, cost_nanos, nanos_to_dollars, parse_prices,
                      usage_item)
from .validation import check_id, check_text

__all__ = ["QueueUsage", "cost_nanos", "parse_prices", "usage_item", "totals"]

MOST_NAMED = 50                  # models, batches and sessions usage_totals returns (each)
MAX_MINUTES = 25 * 60            # the minute totals live 25 hours
MAX_BUDGET_TOKENS = 10 ** 15
MAX_BUDGET_DOLLARS = 1e9         # in nanodollars still far inside a 64-bit count
_BUDGET_KINDS = ("session", "batch")


def totals(fields: dict[str, str] | Sequence[str] | None) -> dict[str, Any]:
    """One usage hash (a dict, or HGETALL's flat reply) as {prompt_tokens,
    completion_tokens, total_tokens, cost (dollars, None when no call had a price), calls}.
    A count that does not parse reads 0."""
    if isinstance(fields, (list, tuple)):
        fields = dict(zip(fields[::2], fields[1::2]))
    fields = fields or {}
    out: dict[str, Any] = {name: _int(fields.get(name)) for name in TOKEN_FIELDS}
    out["cost"] = nanos_to_dollars(_int(fields.get("cost_nanos"))) \
        if _int(fields.get("priced_calls")) else None
    out["calls"] = _int(fields.get("calls"))
    return out


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _named(flat: Sequence[Any]) -> dict[str, dict[str, Any]]:
    return {flat[i]: totals(flat[i + 1]) for i in range(0, len(flat), 2)}


class QueueUsage:
    """Token and cost reads and budgets of one namespace. ``TaskQueue`` (engine/queue.py)
    sets ``client``, ``keys`` and ``store``."""

    client: redis.Redis
    keys: Keys
    store: Any

    def usage_totals(self, minutes: int = 60) -> dict[str, Any]:
        """Everything spent, in one round trip: {"total", "models", "batches" and
        "sessions" (each the 50 counted most recently), "minutes" (the last ``minutes``,
        oldest first, each with "minute" in epoch ms)}; each entry holds prompt_tokens,
        completion_tokens, total_tokens, cost (dollars, None when no call had a price)
        and calls."""
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= MAX_MINUTES:
            raise ValidationError(f"minutes must be a whole number from 1 to {MAX_MINUTES}, got {minutes!r}")
        with translate_redis_errors():
            now, total, models, batches, sessions, rows = self.store.usage_totals(minutes, MOST_NAMED)
        first = int(now) // 60000 - minutes + 1
        return {"total": totals(total), "models": _named(models), "batches": _named(batches),
                "sessions": _named(sessions),
                "minutes": [{"minute": (first + i) * 60000, **totals(row)} for i, row in enumerate(rows)]}

    def usage(self, *, batch_id: str | None = None, session_id: str | None = None,
              model: str | None = None) -> dict[str, Any]:
        """What one batch, session or model spent (at most one of them; none: everything),
        as :meth:`usage_totals` gives each entry. A name never counted reads zeros."""
        named = [(kind, name) for kind, name in (("batch", batch_id), ("session", session_id),
                                                 ("model", model)) if name is not None]
        if len(named) > 1:
            raise ValidationError("usage reads one of batch_id, session_id and model at a time")
        if named:
            kind, name = named[0]
            if kind == "batch":
                check_id(name, "batch_id")
            else:
                check_text(name, "model" if kind == "model" else "session_id")
            key = self.keys.usage(kind, name)
        else:
            key = self.keys.usage_total
        with translate_redis_errors():
            try:
                return totals(self.client.hgetall(key))
            except redis.ResponseError:      # a key of another type: nothing counted there
                return totals(None)

    def set_budget(self, *, session_id: str | None = None, batch_id: str | None = None,
                   tokens: int | float | None = None, cost: float | None = None) -> dict[str, Any]:
        """Set the budget of one session or batch (exactly one of them): at most ``tokens``
        tokens and ``cost`` dollars. Each limit given as None is cleared. Once the
        session's or batch's spend reaches a limit, its tasks still waiting fail at claim
        with reason "budget exhausted" (calls already running finish). Returns the budget
        as :meth:`budgets` shows it."""
        kind, owner = _owner(session_id, batch_id)
        limits = {"tokens": _limit(tokens, "tokens", 1, MAX_BUDGET_TOKENS),
                  "cost_nanos": _limit(cost, "cost", 1e-9, MAX_BUDGET_DOLLARS, NANOS_PER_DOLLAR)}
        base = f"{kind}:{owner}:"
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=True)
            for name, value in limits.items():
                if value is None:
                    pipe.hdel(self.keys.budgets, base + name)
                else:
                    pipe.hset(self.keys.budgets, base + name, value)
            pipe.execute()
        return self._budget_rows([(kind, owner, limits["tokens"], limits["cost_nanos"])])[0]

    def budgets(self) -> list[dict[str, Any]]:
        """Every budget: {"kind" ("session" or "batch"), "id", "tokens", "cost" (the limits,
        None when unset), "spent_tokens", "spent_cost", "exhausted"}; two round trips."""
        with translate_redis_errors():
            try:
                fields = self.client.hgetall(self.keys.budgets)
            except redis.ResponseError:
                return []
        found: dict[tuple[str, str], dict[str, int]] = {}
        for field, value in fields.items():
            kind, _, rest = field.partition(":")
            owner, _, limit = rest.rpartition(":")
            if kind in _BUDGET_KINDS and owner and limit in ("tokens", "cost_nanos") and value.isdigit():
                found.setdefault((kind, owner), {})[limit] = int(value)
        rows = [(kind, owner, v.get("tokens"), v.get("cost_nanos")) for (kind, owner), v in sorted(found.items())]
        return self._budget_rows(rows)

    def _budget_rows(self, rows: Sequence[tuple[str, str, int | None, int | None]]) -> list[dict[str, Any]]:
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=False)
            for kind, owner, _, _ in rows:
                pipe.hmget(self.keys.usage(kind, owner), "total_tokens", "cost_nanos")
            spent = pipe.execute(raise_on_error=False)
        out = []
        for (kind, owner, tokens, nanos), used in zip(rows, spent):
            used_tokens, used_nanos = (0, 0) if isinstance(used, Exception) else (_int(used[0]), _int(used[1]))
            out.append({"kind": kind, "id": owner, "tokens": tokens,
                        "cost": None if nanos is None else nanos_to_dollars(nanos),
                        "spent_tokens": used_tokens, "spent_cost": nanos_to_dollars(used_nanos),
                        "exhausted": (tokens is not None and used_tokens >= tokens)
                        or (nanos is not None and used_nanos >= nanos)})
        return out


def _owner(session_id: str | None, batch_id: str | None) -> tuple[str, str]:
    if (session_id is None) == (batch_id is None):
        raise ValidationError("a budget belongs to exactly one of session_id and batch_id")
    if session_id is not None:
        check_text(session_id, "session_id")
        return "session", session_id
    check_id(batch_id, "batch_id")
    return "batch", batch_id


def _limit(value: Any, name: str, least: float, most: float, scale: int = 1) -> int | None:
    """A budget limit as the whole number stored (tokens, or nanodollars for a cost)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not least <= value <= most:
        raise ValidationError(f"{name} must be a positive number up to {most:g}, or None to clear it; "
                              f"got {value!r}")
    return max(1, round(value * scale))
