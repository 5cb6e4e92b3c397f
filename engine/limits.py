"""Provider limits: pace every worker on every host to what an LLM provider allows.

A *limit key* names one allowance a provider enforces (by default the backend, its base
URL and the model: ``openai api.openai.com gpt-4o-mini``). A worker registers a handler
under a key (``register_handler(type, fn, limit="...")``; the agent's handler gets its
backend's key), and from then on claim.lua hands a task of that type to a slot only when
the key admits one more call now:

- not paused (a 429 pauses the key for every worker until the provider's time);
- fewer calls in flight than the key's concurrency cap;
- its request pace (GCRA: calls spaced evenly, bursts of 0.1 s worth) and token pace
  (the prompt's estimated tokens plus the average answer) allow it.

Otherwise the task stays pending, parked on the key in claim order, and the worker sleeps
until the key frees: no slot waits and nothing polls. The pace comes from the lowest of:
the caps configured here (``set_limit``, or ``AGENT_LIMIT_RPM``/``_TPM``/``_CONCURRENCY``
for the agent's key), the provider's own ``x-ratelimit-*`` headers (learnt on every answer,
engine/scripts/settle.lua), and for a provider that sends none, a pace found from its 429s
alone (additive increase, halving on a 429). A 429 is not a failed attempt
(engine/scripts/defer.lua): the task waits with its attempt count unchanged, and fails
only after waiting longer than ``QUEUE_LIMIT_HORIZON`` (default one hour).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from . import clock
from .errors import ValidationError, translate_redis_errors
from .validation import check_text

MAX_LIMIT_KEY_CHARS = 200
DEFAULT_DEFER_MS = 1000          # a 429 that says nothing of when to come back
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_FIELDS = ("rpm", "tpm", "concurrency")


@dataclass(slots=True)
class ProviderSignal:
    """What one provider answer said of its limits (absent figures are None).
    ``headers`` is False for a provider that sends no ``x-ratelimit-*`` headers."""

    headers: bool
    limit_requests: float | None = None
    limit_tokens: float | None = None
    remaining_requests: float | None = None
    remaining_tokens: float | None = None
    reset_requests_ms: int | None = None
    reset_tokens_ms: int | None = None
    retry_after_ms: int | None = None


def parse_duration_ms(text: Any) -> int | None:
    """OpenAI's reset durations (``"1s"``, ``"6m0s"``, ``"120ms"``, ``"1h2m3.5s"``) or a
    plain number of seconds, in ms; None when unreadable."""
    if not isinstance(text, str) or not text.strip():
        return None
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            return None
        scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
        seconds = sum(float(n) * scale[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return int(seconds * 1000)


def _number(headers: Mapping[str, Any], name: str) -> float | None:
    raw = headers.get(name)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def signal_from_headers(headers: Mapping[str, Any],
                        retry_after_s: float | None = None) -> ProviderSignal:
    """The limits an answer's headers state (header names in any case)."""
    lower = {str(k).lower(): v for k, v in headers.items()}
    signal = ProviderSignal(
        headers=any(name.startswith("x-ratelimit-") for name in lower),
        limit_requests=_number(lower, "x-ratelimit-limit-requests"),
        limit_tokens=_number(lower, "x-ratelimit-limit-tokens"),
        remaining_requests=_number(lower, "x-ratelimit-remaining-requests"),
        remaining_tokens=_number(lower, "x-ratelimit-remaining-tokens"),
        reset_requests_ms=parse_duration_ms(lower.get("x-ratelimit-reset-requests")),
        reset_tokens_ms=parse_duration_ms(lower.get("x-ratelimit-reset-tokens")))
    if retry_after_s is not None:
        signal.retry_after_ms = int(retry_after_s * 1000)
    return signal


def defer_ms(signal: ProviderSignal | None, retry_after_s: float | None) -> int:
    """How long a rate-limited task waits: the provider's Retry-After, else the reset of
    whichever allowance it spent, else DEFAULT_DEFER_MS."""
    if retry_after_s is not None:
        return max(0, int(retry_after_s * 1000))
    if signal is not None:
        resets = [ms for ms, left in ((signal.reset_requests_ms, signal.remaining_requests),
                                      (signal.reset_tokens_ms, signal.remaining_tokens))
                  if ms is not None and (left is None or left < 1)]
        if resets:
            return max(resets)
    return DEFAULT_DEFER_MS


def settle_item(task_id: str, key: str, signal: ProviderSignal | None,
                usage: Mapping[str, Any] | None) -> tuple:
    """settle.lua's 11 values for one call under ``key``."""
    def text(value: Any) -> str:
        return "" if value is None else repr(value) if isinstance(value, float) else str(value)
    seen = "" if signal is None else "1" if signal.headers else "0"
    s = signal or ProviderSignal(headers=False)
    usage = usage if isinstance(usage, Mapping) else {}
    completion, total = usage.get("completion_tokens"), usage.get("total_tokens")
    return (task_id, key, seen, text(s.limit_requests), text(s.limit_tokens),
            text(s.remaining_requests), text(s.remaining_tokens), text(s.reset_requests_ms),
            text(s.reset_tokens_ms), text(completion if isinstance(completion, int) else None),
            text(total if isinstance(total, int) else None))


def check_limit_key(key: Any) -> str:
    """A limit key: 1-200 printable characters."""
    key = check_text(key, "limit key", MAX_LIMIT_KEY_CHARS)
    if not key.strip() or not key.isprintable():
        raise ValidationError("limit key must be printable text, not blank")
    return key


def backend_limit_key(backend: str, base_url: str | None, model: str) -> str:
    """The default limit key of a backend: its name, the host of its base URL (never
    credentials or path) and the model."""
    host = "api.openai.com"
    if base_url:
        parts = urlsplit(base_url)
        host = parts.hostname or "local"
        if parts.port:
            host = f"{host}:{parts.port}"
    return check_limit_key(f"{backend} {host} {model}"[:MAX_LIMIT_KEY_CHARS])


def _cap(value: Any, name: str, whole: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 < value < math.inf) or (whole and value != int(value)):
        raise ValidationError(f"{name} must be a {'whole ' if whole else ''}number greater "
                              f"than 0, or None for no cap")
    return str(int(value)) if whole else repr(float(value))


class LimitVerbs:
    """The queue's verbs on provider limits (mixed into engine.queue.TaskQueue, which
    provides ``client``, ``keys`` and ``store``)."""

    client: Any
    keys: Any
    store: Any

    def _now_ms(self) -> int:
        """The scripts' clock: a test's override, else this host's."""
        return int(self.store.now_arg() or clock.now_ms())

    def set_limit(self, key: str, *, rpm: float | None = None, tpm: float | None = None,
                  concurrency: int | None = None) -> None:
        """Cap limit key ``key`` for every worker: requests and tokens per minute, calls
        in flight. None removes that cap (what the provider says still applies)."""
        key = check_limit_key(key)
        values = {"rpm": _cap(rpm, "rpm"), "tpm": _cap(tpm, "tpm"),
                  "concurrency": _cap(concurrency, "concurrency", whole=True)}
        name = self.keys.limit(key)
        with translate_redis_errors():
            pipe = self.client.pipeline(transaction=True)
            present = {f: v for f, v in values.items() if v}
            if present:
                pipe.hset(name, mapping=present)
            absent = [f for f, v in values.items() if not v]
            if absent:
                pipe.hdel(name, *absent)
            pipe.zadd(self.keys.limits, {key: self._now_ms()})
            pipe.execute()

    def limit_states(self) -> list[dict[str, Any]]:
        """Every limit key the workers have used or an operator configured, most recently
        active first: its configured and learned limits, the pace in use, calls in flight,
        tasks deferred and until when, any pause, and the last 429s."""
        with translate_redis_errors():
            names = self.client.zrevrange(self.keys.limits, 0, 199)
            now = self._now_ms()
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                base = self.keys.limit(name)
                pipe.hgetall(base)
                pipe.zcount(base + ":inflight", now, "+inf")
                pipe.zcard(base + ":parked")
                pipe.zscore(self.keys.limits_due, name)
                pipe.lrange(base + ":429s", 0, 19)
            replies = pipe.execute(raise_on_error=False)
        return [_state(name, now, *replies[i * 5:i * 5 + 5]) for i, name in enumerate(names)]


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _state(name: str, now: int, fields: Any, in_flight: Any, deferred: Any, due: Any,
           recent: Any) -> dict[str, Any]:
    """One key's state as limit_states shows it (a damaged record reads as empty)."""
    fields = fields if isinstance(fields, dict) else {}
    paused = _float(fields.get("paused_until"))
    learned_rpm, pace = _float(fields.get("learned_rpm")), _float(fields.get("pace_rps"))
    configured = {"rpm": _float(fields.get("rpm")), "tpm": _float(fields.get("tpm")),
                  "concurrency": _float(fields.get("concurrency"))}
    if configured["concurrency"] is not None:
        configured["concurrency"] = int(configured["concurrency"])
    pacing = learned_rpm * 0.95 if learned_rpm else pace * 60 if pace else None
    if configured["rpm"]:
        pacing = min(pacing or configured["rpm"], configured["rpm"] * 0.98)
    last = []
    for raw in recent if isinstance(recent, list) else []:
        try:
            item = json.loads(raw)
            last.append({"at": int(item["at"]),
                         "retry_after": (item.get("retry_after_ms") or 0) / 1000})
        except (ValueError, KeyError, TypeError):
            continue
    deferred = deferred if isinstance(deferred, int) else 0
    return {"key": name, "configured": configured,
            "learned": {"rpm": learned_rpm, "tpm": _float(fields.get("learned_tpm"))},
            "pacing": {"rpm": pacing},
            "in_flight": in_flight if isinstance(in_flight, int) else 0,
            "deferred": deferred,
            "deferred_until": int(due) if deferred and _float(due) is not None else None,
            "paused_until": int(paused) if paused and paused > now else None,
            "last_429s": last}
