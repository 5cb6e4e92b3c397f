"""``worker.py`` processes with the long-running handlers of tests/support/long_handlers.py,
for the timeout and cancel tests (import the ``long_workers`` fixture into a test module)."""
from __future__ import annotations

from typing import Callable, Iterator

import pytest

from tests.support.processes import WorkerProcess, worker_env


@pytest.fixture
def long_workers(redis_url: str, namespace: str) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers: ``long_workers(*args, env={...})``; all are closed after the test."""
    started: list[WorkerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        process = WorkerProcess(worker_env(redis_url, namespace, **(env or {})),
                                "--handlers", "tests.support.long_handlers", *args)
        started.append(process)
        return process
    yield start
    for process in started:
        process.close()
