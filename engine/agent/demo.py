"""The offline demo agent: lets anyone try the queue and console without an LLM account.

Every answer says plainly that it comes from the demo agent; it is never presented as a
model's output. Latency and failure rate are configurable so retries and the console's
live views can be watched working.
"""
from __future__ import annotations

import random
import time
from typing import Any

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

    def run(self, query: str, session_id: str | None = None) -> dict[str, Any]:
        """Return the demo answer document for ``query``."""
        if self.latency:
            time.sleep(self.latency * self._rng.uniform(0.5, 1.5))
        if self.failure_rate and self._rng.random() < self.failure_rate:
            raise RetryableError("demo agent: simulated transient failure (AGENT_DEMO_FAILURE_RATE)")
        words = len(query.split())
        answer = (f"{DEMO_NOTICE} You asked: {query!r} ({words} word{'s' if words != 1 else ''}). "
                  "Configure AGENT_BACKEND=openai (or module.path:callable) for real answers.")
        return {"answer": answer, "backend": self.name, "model": self.model,
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
