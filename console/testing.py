"""Helpers for testing the console (used by ``tests/test_console_*.py``). No pytest here."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import redis

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
PAGE_FILES = {
    "Submit": "pages/1_Submit.py", "Tasks": "pages/2_Tasks.py", "Workers": "pages/3_Workers.py",
    "Schedules": "pages/4_Schedules.py", "Failed tasks": "pages/5_Failed_tasks.py",
    "Events": "pages/6_Events.py",
}


@dataclass
class RedisCalls:
    """Round trips (a command, or a whole pipeline) and commands sent, with their names."""

    round_trips: int = 0
    commands: int = 0
    names: list[str] = field(default_factory=list)


@contextlib.contextmanager
def count_redis_calls(client: redis.Redis) -> Iterator[RedisCalls]:
    """Count what goes through ``client`` and the pipelines built from it: a command sent
    on its own is one round trip; a pipeline is one round trip carrying many commands."""
    calls = RedisCalls()
    original_command = client.execute_command
    original_execute = redis.client.Pipeline.execute
    pool = client.connection_pool

    def command(*args, **kwargs):
        calls.round_trips += 1
        calls.commands += 1
        calls.names.append(str(args[0]))
        return original_command(*args, **kwargs)

    def execute(pipe, *args, **kwargs):
        # An empty pipeline sends nothing (redis-py returns at once), so it is not counted.
        if pipe.connection_pool is pool and pipe.command_stack:
            calls.round_trips += 1
            calls.commands += len(pipe.command_stack)
            calls.names.append(f"pipeline[{len(pipe.command_stack)}]")
        return original_execute(pipe, *args, **kwargs)

    client.execute_command = command
    redis.client.Pipeline.execute = execute
    try:
        yield calls
    finally:
        del client.execute_command
        redis.client.Pipeline.execute = original_execute


def button(at, label: str):
    """The (form submit) button labelled ``label`` on the AppTest page."""
    matches = [b for b in at.button if b.label == label]    # includes form submit buttons
    if not matches:
        raise LookupError(f"no button {label!r}; buttons: {[b.label for b in at.button]}")
    return matches[0]


def texts(at) -> str:
    """Every piece of text on the AppTest page, joined: to assert what is (not) shown."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "text", "code", "info",
                 "success", "warning", "error", "exception"):
        parts.extend(str(getattr(node, "value", "")) for node in at.get(kind))
    for node in at.get("metric"):
        parts.append(f"{node.label} {node.value}")
    for node in at.get("expander"):
        parts.append(str(getattr(node, "label", "")))
    return "\n".join(parts)
