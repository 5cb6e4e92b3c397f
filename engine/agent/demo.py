"""The offline demo agent: lets anyone try the queue and console without an LLM account.

Every answer says plainly that it comes from the demo agent; it is never presented as a
model's output. Latency and failure rate are configurable so retries and the console's
live views can be watched working.
"""
from __future__ import annotations

import random
import time
from typing import Any, Mapping, Sequence

from ..errors import RetryableError

DEMO_NOTICE = "[demo agent: offline, no LLM was called]"


class DemoBackend:
    """Answers any query after ``latency`` seconds; fails with ``failure_rate``."""

    name = "demo"

    def __init__(self, latency: float = 0.5, failure_rate: float = 0.0, rng: random.Random | None = None):
        self.latency = max(0.0, latency)
        self.failure_rate = failure_rate
        self.model = "demo"
        self._rng = rng or random.Random()

    def run(self, query: str, session_id: str | None = None,
            history: Sequence[Mapping[str, str]] | None = None) -> dict[str, Any]:
        """Return the demo answer document for ``query``; with ``history`` (the session's
        conversation) it says which turn this is and what it follows."""
        if self.latency:
            time.sleep(self.latency * self._rng.uniform(0.5, 1.5))
        if self.failure_rate and self._rng.random() < self.failure_rate:
            raise RetryableError("demo agent: simulated transient failure (AGENT_DEMO_FAILURE_RATE)")
        words = len(query.split())
        answer = (f"{DEMO_NOTICE} You asked: {query!r} ({words} word{'s' if words != 1 else ''})"
                  f"{_following(history)}. "
                  "Configure AGENT_BACKEND=openai (or module.path:callable) for real answers.")
        return {"answer": answer, "backend": self.name, "model": self.model,
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


def _following(history: Sequence[Mapping[str, str]] | None) -> str:
    """", turn 2 of this conversation, following 'What is ML?'" (nothing without history)."""
    asked = [turn["content"] for turn in history or () if turn.get("role") == "user"]
    if not asked:
        return ""
    last = asked[-1] if len(asked[-1]) <= 80 else asked[-1][:79] + "…"
    return f", turn {len(asked) + 1} of this conversation, following {last!r}"
