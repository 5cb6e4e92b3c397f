"""Issue 10's "Done when": a fleet of real ``worker.py`` processes paced to a provider's limits.

Each test starts ``worker.py --concurrency 50`` processes with ``AGENT_BACKEND=openai``
against tests/support/limited_chat_server.py, a chat-completions server that enforces
requests-per-minute and tokens-per-minute buckets (one second of burst) and answers 429
beyond them, then submits agent queries and waits for every one to finish. What is
checked is what a user of a rate-limited provider is promised:

- learned from the provider's x-ratelimit headers, with nothing configured: every task
  completes, none is dead-lettered, 429s are at most 5% of the tasks, and the run takes at
  most 1.25 x the ideal (tasks / allowed rate), for a request limit and for a token limit
  that binds first;
- a server that sends no headers at all (429 only): every task completes, within 2 x ideal;
- a limit configured on our side (``AGENT_LIMIT_RPM``): not one 429;
- four workers under a configured limit with plenty of work: the rate the provider sees
  is never above the limit in any sliding window, and within 5% of it (the slow test
  uses the issue's 60 s window; the default one a 10 s window at a scaled limit).

A 429 is not a failed attempt: every completed task finished on its first attempt.
Figures of each run are printed (``pytest -s``) and put in every failure message.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from engine import TaskQueue
from engine.errors import TaskTimeout
from engine.models import AgentTask
from tests.support.limited_chat_server import LimitedChatServer
from tests.support.processes import REPO_ROOT, worker_env
from tests.support.steps import wait_until

CONCURRENCY = 50
LATENCY = 0.05            # seconds a provider answer takes
API_KEY = "test-key"


class AgentWorker:
    """``python worker.py`` WITH the agent handler (tests/support/processes.py starts
    ``--no-agent`` workers), its output in a file read for the ready banner."""

    def __init__(self, env: dict[str, str], log: Path):
        self.log = log
        self._file = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "worker.py", "--concurrency", str(CONCURRENCY)], cwd=REPO_ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=self._file, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.output()}")
        return " ready" in self.output()

    def stop(self) -> int | None:
        """SIGTERM (finish what is in hand), SIGKILL if it does not leave; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._file.close()
        return self.proc.returncode


@dataclass(repr=False)
class Run:
    """What one fleet run did, for assertions and the printed figures."""

    name: str
    tasks: int
    rate: float               # requests a second the binding limit allows
    elapsed: float
    statuses: dict[str, int]
    attempts: dict[int, int]
    dead_letters: int
    accepted: int
    rejected: int
    errors: dict[str, int]    # the first words of each task's error, and how many had it
    densest_second: int       # the most requests the server accepted in any 1 s window
    refusals_at: list[float]  # when each 429 came, seconds after the first request

    @property
    def ideal(self) -> float:
        return self.tasks / self.rate

    def __repr__(self) -> str:
        return (f"[{self.name}] {self.tasks} tasks in {self.elapsed:.2f} s (ideal {self.ideal:.2f} s, "
                f"x{self.elapsed / self.ideal:.2f}); statuses {self.statuses}; attempts {self.attempts}; "
                f"dead letters {self.dead_letters}; server accepted {self.accepted}, "
                f"429 {self.rejected} ({100 * self.rejected / self.tasks:.1f}% of tasks) at "
                f"{[round(t, 2) for t in self.refusals_at[:30]]} s; densest second {self.densest_second}"
                + (f"; errors {self.errors}" if self.errors else ""))


@pytest.fixture
def fleet(redis_url: str, namespace: str, tmp_path: Path) -> Iterator:
    """``start(count, server, **env)``: that many agent workers on ``server``, ready."""
    started: list[AgentWorker] = []

    def start(count: int, server: LimitedChatServer, **env: str) -> list[AgentWorker]:
        environment = worker_env(redis_url, namespace, AGENT_BACKEND="openai", AGENT_MODEL="test-model",
                                 AGENT_OPENAI_BASE_URL=server.url, AGENT_OPENAI_API_KEY=API_KEY,
                                 QUEUE_LEASE_TIMEOUT="5", **env)
        workers = [AgentWorker(environment, tmp_path / f"worker-{len(started) + i}.log")
                   for i in range(count)]
        started.extend(workers)
        for worker in workers:
            wait_until(worker.ready, timeout=60, what="a worker's ready banner")
        return workers

    yield start
    codes = [worker.stop() for worker in started]
    assert codes == [0] * len(started), "\n".join(w.output()[-3000:] for w in started)


def query(i: int, size: int) -> str:
    """A distinct agent query of ``size`` characters."""
    head = f"query {i:05d}: "
    return (head + "tell me about rate limits " * (size // 26 + 1))[:max(size, len(head))]


def run_fleet(name: str, queue: TaskQueue, server: LimitedChatServer, tasks: int, rate: float,
              query_chars: int = 40, timeout: float | None = None) -> Run:
    """Submit ``tasks`` agent queries to the running fleet and wait for every one to end."""
    ids = queue.submit_tasks([AgentTask(payload={"query": query(i, query_chars)}) for i in range(tasks)])
    started = time.monotonic()
    deadline = started + (timeout or 3 * tasks / rate + 15)
    attempts: dict[int, int] = {}
    for task_id in ids:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            doc = queue.wait_for_result(task_id, timeout=left)
        except TaskTimeout:
            break
        if doc["status"] == "completed":
            attempts[doc.get("attempts")] = attempts.get(doc.get("attempts"), 0) + 1
    elapsed = time.monotonic() - started
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    for record in queue.get_task_statuses(ids):
        status = record["status"] if record else "gone"
        statuses[status] = statuses.get(status, 0) + 1
        if record and record.get("error"):
            errors[record["error"][:120]] = errors.get(record["error"][:120], 0) + 1
    stats = queue.get_queue_stats()
    run = Run(name, tasks, rate, elapsed, statuses, attempts, stats.failed_tasks,
              server.accepted, server.rejected_429, errors, server.max_in_window(1.0),
              refusal_times(server))
    print(run)
    return run


def refusal_times(server: LimitedChatServer) -> list[float]:
    log = server.snapshot()
    return [entry.monotonic - log[0].monotonic for entry in log if entry.status == 429]


def assert_all_done_on_first_attempt(run: Run) -> None:
    assert run.statuses == {"completed": run.tasks}, run
    assert run.dead_letters == 0, run
    assert set(run.attempts) == {1}, f"a 429 used up an attempt: {run}"


# --- learned from the provider -------------------------------------------------------------


def test_a_request_limit_learned_from_headers_paces_the_fleet(fleet, queue):
    with LimitedChatServer(rpm=2400, latency=LATENCY) as server:            # 40 a second
        fleet(2, server)
        run = run_fleet("learned rpm", queue, server, tasks=300, rate=40)
    assert_all_done_on_first_attempt(run)
    assert run.rejected <= 0.05 * run.tasks, run
    assert run.elapsed <= 1.25 * run.ideal, run


def test_a_token_limit_that_binds_first_is_learned_from_headers(fleet, queue):
    # 800 characters = 200 prompt tokens, + 50 completion = 250 a request; 600,000 a minute
    # allows 40 requests a second while the request limit would allow 100.
    with LimitedChatServer(rpm=6000, tpm=600_000, latency=LATENCY, completion_tokens=50) as server:
        fleet(2, server)
        run = run_fleet("learned tpm", queue, server, tasks=300, rate=40, query_chars=800)
        tokens = sum(entry.tokens for entry in server.snapshot())
    assert tokens == 250 * run.accepted, "each request costs what the comment says"
    assert_all_done_on_first_attempt(run)
    assert run.rejected <= 0.05 * run.tasks, run
    assert run.elapsed <= 1.25 * run.ideal, run


def test_a_server_without_headers_is_paced_from_its_429s(fleet, queue):
    with LimitedChatServer(rpm=2400, headers=False, latency=LATENCY) as server:
        fleet(2, server)
        run = run_fleet("no headers", queue, server, tasks=300, rate=40)
    assert_all_done_on_first_attempt(run)
    assert run.elapsed <= 2 * run.ideal, run


# --- configured on our side ----------------------------------------------------------------


def test_a_configured_request_limit_draws_no_429_at_all(fleet, queue):
    # No headers: nothing to learn from, so only the configured limit can keep it at 0.
    with LimitedChatServer(rpm=2400, headers=False, latency=LATENCY) as server:
        fleet(2, server, AGENT_LIMIT_RPM="2000")
        run = run_fleet("configured rpm", queue, server, tasks=200, rate=2000 / 60)
    assert_all_done_on_first_attempt(run)
    assert run.rejected == 0, run


def paced_fleet(fleet, queue, limit_rpm: int, tasks: int, window: float, name: str):
    """Four workers under ``AGENT_LIMIT_RPM=limit_rpm`` on a server allowing twice that:
    (run, the most accepted in any ``window``, accepted in the first full ``window``)."""
    with LimitedChatServer(rpm=2 * limit_rpm, latency=LATENCY) as server:
        fleet(4, server, AGENT_LIMIT_RPM=str(limit_rpm))
        run = run_fleet(name, queue, server, tasks=tasks, rate=limit_rpm / 60)
        times = server.accepted_times()
        densest = server.max_in_window(window)
        first = server.count_between(times[0], times[0] + window) if times else 0
    allowed = limit_rpm * window / 60
    per_second = [sum(1 for t in times if times[0] + i <= t < times[0] + i + 1)
                  for i in range(int(times[-1] - times[0]) + 1)] if times else []
    print(f"[{name}] most in any {window:g} s window {densest} (limit {allowed:g}); "
          f"first full window {first} ({100 * first / allowed:.1f}%); per second {per_second}")
    return run, densest, first, allowed


def assert_limit_held(run, densest: int, first: int, allowed: float) -> None:
    """Every task done on its first attempt, no window over the limit, and the first full
    window at least 95% of it (the pace is not needlessly slow)."""
    assert_all_done_on_first_attempt(run)
    assert densest <= allowed, (densest, allowed, str(run))
    assert first >= 0.95 * allowed, (first, allowed, str(run))


def test_four_workers_hold_a_configured_limit_in_every_window(fleet, queue):
    # Scaled down for the default suite: 1,200 a minute is 200 in any 10 s window, and 240
    # tasks keep the fleet busy through the first full window (12 s at the limit).
    run, densest, first, allowed = paced_fleet(fleet, queue, 1200, tasks=240, window=10,
                                               name="4 workers, 10 s windows")
    assert_limit_held(run, densest, first, allowed)


@pytest.mark.slow
def test_four_workers_hold_a_configured_limit_in_every_minute(fleet, queue):
    # The issue's own figure: any 60 s window, with work for a little over a minute.
    run, densest, first, allowed = paced_fleet(fleet, queue, 600, tasks=700, window=60,
                                               name="4 workers, 60 s windows")
    assert_limit_held(run, densest, first, allowed)
