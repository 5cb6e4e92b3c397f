"""``python worker.py`` as a subprocess, with its output collected line by line.

Output is read by background threads so a test can wait for a line (with a deadline)
without sleeping, and the pipes never fill up and block the worker.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
OWNED_PREFIXES = ("QUEUE_", "REDIS_", "AGENT_", "OPENAI_", "CONSOLE_")


def worker_env(redis_url: str, namespace: str, **extra: str) -> dict[str, str]:
    """The environment of a test worker: ours, none of the caller's queue settings, and
    short leases so recovery takes about a second."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(OWNED_PREFIXES) and k != "USE_REDIS_QUEUE"}
    env.update({"REDIS_URL": redis_url, "QUEUE_NAMESPACE": namespace,
                "QUEUE_LEASE_TIMEOUT": "1", "QUEUE_HEARTBEAT_INTERVAL": "0.2",
                "AGENT_DEMO_LATENCY": "0", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


class WorkerProcess:
    """One ``worker.py`` process; ``stdout``/``stderr`` accumulate as lists of lines."""

    def __init__(self, env: dict[str, str], *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "worker.py", "--no-agent", "--handlers", "tests.support.handlers", *args],
            cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._readers = [threading.Thread(target=self._pump, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.proc.stdout, self.stdout),
                                               (self.proc.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()

    def _pump(self, stream, lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = 10.0, stream: str = "stdout") -> re.Match:
        """The first match of ``pattern`` in a line of ``stream``; fails after ``timeout``."""
        lines = self.stdout if stream == "stdout" else self.stderr
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in lines:
                    match = regex.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line matching {pattern!r} in {stream} within "
                                         f"{timeout} s:\n{self.output()}")
                self._changed.wait(min(left, 0.1))

    @property
    def worker_id(self) -> str:
        """The id from the banner (waits for it)."""
        return self.wait_for_line(r"Worker (worker-[0-9a-f]{8}) ready").group(1)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process."""
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for the exit code; the output threads have drained when it returns."""
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def output(self) -> str:
        """Everything printed so far, for failure messages."""
        return "--- stdout\n" + "\n".join(self.stdout) + "\n--- stderr\n" + "\n".join(self.stderr)

    def close(self) -> None:
        """Make sure the process is gone (SIGKILL if it still runs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        for reader in self._readers:
            reader.join(timeout=5)
