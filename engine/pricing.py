"""Prices of model calls, and the usage a handler reports turned into what usage.lua counts.

The price table is configuration (``AGENT_PRICES``, engine/config.py): JSON mapping a model
name to its input and output prices in dollars per million tokens, e.g.
``{"gpt-4o-mini": {"input": 0.15, "output": 0.60}}``. Costs are whole nanodollars (1e-9
dollars), so the totals Redis sums never drift; a model missing from the table is counted
in tokens, without a cost. This module imports nothing from the engine but its errors, so
configuration and the reads can both use it.
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping

from .errors import ConfigurationError

Prices = Mapping[str, tuple[float, float]]      # model -> (input, output) $ per 1M tokens
TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")
NANOS_PER_DOLLAR = 1_000_000_000
_MAX_PRICE = 1_000_000.0     # $ per 1M tokens: far above any real price, far below overflow
_MAX_TOKENS = 10 ** 12       # per call: a reported count above it is not a count


def parse_prices(text: str | None) -> dict[str, tuple[float, float]]:
    """The ``AGENT_PRICES`` JSON as {model: (input, output)}; ``ConfigurationError`` naming
    what is wrong for anything else. Empty or unset: no prices."""
    if not text or not text.strip():
        return {}
    try:
        table = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"AGENT_PRICES is not JSON ({exc.msg} at character {exc.pos}); "
                                 'expected {"<model>": {"input": 0.15, "output": 0.6}, ...}') from None
    if not isinstance(table, dict):
        raise ConfigurationError('AGENT_PRICES must be a JSON object: {"<model>": {"input": '
                                 '<$ per 1M prompt tokens>, "output": <$ per 1M completion tokens>}}')
    return {_model_name(model): _price_pair(model, entry) for model, entry in table.items()}


def _model_name(model: str) -> str:
    if not model.strip() or any(ord(c) < 32 for c in model):
        raise ConfigurationError(f"AGENT_PRICES: model name {model!r} is empty or has control characters")
    return model


def _price_pair(model: str, entry: Any) -> tuple[float, float]:
    if not isinstance(entry, dict) or set(entry) != {"input", "output"}:
        raise ConfigurationError(f"AGENT_PRICES[{model!r}] must be {{\"input\": <number>, "
                                 f"\"output\": <number>}} (dollars per million tokens)")
    pair = []
    for side in ("input", "output"):
        value = entry[side]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or not 0 <= value <= _MAX_PRICE:
            raise ConfigurationError(f"AGENT_PRICES[{model!r}][{side!r}] must be a number of dollars "
                                     f"per million tokens between 0 and {_MAX_PRICE:g}, got {value!r}")
        pair.append(float(value))
    return pair[0], pair[1]


def price_of(model: str | None, prices: Prices) -> tuple[float, float] | None:
    """The model's prices: its own entry, else that of the longest name it extends with a
    dash (providers answer ``gpt-4o-mini-2024-07-18`` when asked for ``gpt-4o-mini``)."""
    if not model:
        return None
    if model in prices:
        return prices[model]
    stems = [name for name in prices if model.startswith(name + "-")]
    return prices[max(stems, key=len)] if stems else None


def cost_nanos(model: str | None, prompt: int, completion: int, prices: Prices) -> int | None:
    """The cost of one call in nanodollars, or None when the model has no price."""
    price = price_of(model, prices)
    if price is None:
        return None
    # $/1M tokens × tokens × 1e9 nanos/$ / 1e6 = tokens × price × 1000.
    return round(prompt * price[0] * 1000 + completion * price[1] * 1000)


def nanos_to_dollars(nanos: int | str) -> float:
    """A cost in nanodollars as dollars."""
    return int(nanos) / NANOS_PER_DOLLAR


def usage_item(task_id: str, result: Any, prices: Prices) -> tuple | None:
    """What ``Store.usage`` counts for a handler's result: (task id, model, prompt,
    completion and total tokens, cost in nanodollars or None); None when the result
    reports no usage, or only zeros (the demo agent, which calls no model). A result
    reports it as the openai backend does: a dict with ``usage`` {prompt_tokens,
    completion_tokens[, total_tokens]} and ``model``. Counts that are not whole numbers
    from 0 to 1e12 make the report be ignored, not the task fail."""
    if not isinstance(result, dict) or not isinstance(result.get("usage"), dict):
        return None
    usage = result["usage"]
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    if prompt is None or completion is None:
        return None
    total = _count(usage.get("total_tokens")) if usage.get("total_tokens") is not None \
        else prompt + completion
    if total is None or prompt + completion + total == 0:     # zeros: no model was called (demo)
        return None
    model = result.get("model") if isinstance(result.get("model"), str) else ""
    model = model if model and len(model) <= 200 and model.isprintable() else ""
    return task_id, model, prompt, completion, total, cost_nanos(model, prompt, completion, prices)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TOKENS:
        return None
    return value


def task_usage(fields: Mapping[str, str]) -> dict[str, Any] | None:
    """A task hash's metering as the public record shows it: {"usage": {prompt_tokens,
    completion_tokens, total_tokens}, "cost": dollars or None}; None when it was never
    metered. Raises ValueError for a count that does not parse."""
    if not any(fields.get(name) for name in TOKEN_FIELDS):
        return None
    usage = {name: int(fields.get(name) or 0) for name in TOKEN_FIELDS}
    cost = fields.get("cost_nanos")
    return {"usage": usage, "cost": nanos_to_dollars(cost) if cost else None}
