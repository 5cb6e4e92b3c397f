"""``worker.py --handlers tests.support.stream_handlers``: the agent's handler, with the
backend the AGENT_* environment names (tests/test_agent_openai_stream.py points it at the
local chat-completions server, which streams its answers)."""
from __future__ import annotations

from typing import Any

from engine.agent import register_handlers


def register(worker: Any) -> None:
    """Register the agent (the worker runs with ``--no-agent`` in tests)."""
    register_handlers(worker, worker.queue.settings)
