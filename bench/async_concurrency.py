"""Async handlers by the hundred: ``python -m bench.async_concurrency [--rounds N]
[--levels 100,500,1000] [--client openai|raw] [--stream]``.

One worker process runs tasks whose ``async def`` handler awaits a local chat-completions
server in a process of its own that answers every call after 1 s
(bench/slow_chat_server.py). With ``--client openai`` (the default) the tasks are
AGENT_QUERY tasks run by the ``openai`` backend's async path (``AsyncOpenAI`` on the
worker's event loop); with ``--client raw`` the handler sends the same request over a
plain asyncio connection, which shows what the queue costs without the client library.
For each concurrency level it submits ``rounds`` × level tasks, drains them with one
worker (``--concurrency`` = level) and prints tasks/s, the worker's CPU per task and its
memory (resident set at the end, and its peak). With a 1 s answer, level tasks/s is the
ceiling. ``--stream`` has the answers streamed (``AGENT_STREAM``, the agent's default) in
ten pieces over the second, each going to the task's progress as a live reader would see
it. Nothing here is a pass/fail test.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from engine import Settings, TaskQueue
from engine.connection import connect
from engine.embedded import RedisServerProcess, free_port
from engine.models import AgentTask

ROOT = Path(__file__).resolve().parent.parent

# The worker, in a process of its own: the openai package is imported (and its first client
# made) before the clock starts, as a long-running worker would have done long before.
WORKER = """
import importlib, json, resource, sys, time
sys.path.insert(0, {root!r})
importlib.import_module("openai")
from engine import Settings, TaskQueue, TaskWorker
from engine.agent import register_handlers
from engine.connection import connect
settings = Settings.from_mapping({env!r})
queue = TaskQueue(connect({url!r}), settings=settings, namespace="asyncbench")
worker = TaskWorker(queue, concurrency={level})
if {raw!r}:
    from bench.slow_chat_server import ask_raw
    async def raw_query(task):
        return {{"answer": await ask_raw({port!r}, task.payload["query"])}}
    worker.register_handler("agent_query", raw_query)
else:
    register_handlers(worker, settings)
started, cpu = time.perf_counter(), time.process_time()
stats = worker.start(burst=True)
wall, cpu = time.perf_counter() - started, time.process_time() - cpu
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({{"wall": wall, "cpu": cpu, "stats": stats,
                  "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
                  "peak_mb": int(status["VmHWM"].split()[0]) / 1024}}))
"""


def run_level(url: str, port: int, level: int, rounds: int, raw: bool,
              stream: bool = False) -> dict:
    """Submit rounds × level agent queries and drain them with one worker of ``level`` slots."""
    queue = TaskQueue(connect(url), settings=Settings.from_mapping({}), namespace="asyncbench")
    count = level * rounds
    queue.submit_tasks([AgentTask(payload={"query": f"question {i}"}) for i in range(count)])
    env = {"AGENT_BACKEND": "openai", "AGENT_OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
           "AGENT_MODEL": "bench-model", "AGENT_TIMEOUT": "30",
           # Streamed (the agent's default): the answer comes in ten pieces over the second,
           # each handed to the task's progress; or one JSON reply.
           "AGENT_STREAM": "true" if stream else "false",
           # It has no limit and sends no rate headers: a cap far above the rate keeps the
           # provider limiter in the path but out of the way (uncapped, the key would
           # slow-start from one call a second, as for any provider that sends no headers).
           "AGENT_LIMIT_RPM": "100000000"}
    code = WORKER.format(root=str(ROOT), env=env, url=url, level=level, raw=raw, port=port)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    figures.update(level=level, tasks=count, rate=figures["stats"]["processed"] / figures["wall"])
    queue.client.close()
    return figures


def async_levels(url: str, levels: list[int], rounds: int, delay: float = 1.0,
                 raw: bool = False, stream: bool = False) -> Iterator[dict]:
    """Each level's figures, measured against a stand-in server answering after ``delay``
    s, started here in a process of its own."""
    port = free_port()
    chat = subprocess.Popen([sys.executable, "-m", "bench.slow_chat_server", str(port),
                             str(delay)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        chat.stdout.readline()     # "listening"
        for level in levels:
            yield run_level(url, port, level, rounds, raw, stream)
    finally:
        chat.terminate()
        chat.wait(timeout=10)


def describe(f: dict) -> str:
    """One level's figures on a line."""
    return (f"{f['rate']:7.0f} tasks/s ({f['stats']['processed']} of {f['tasks']} in "
            f"{f['wall']:.1f} s, worker CPU {f['cpu'] / f['tasks'] * 1e3:.2f} ms/task), "
            f"RSS {f['rss_mb']:.0f} MB (peak {f['peak_mb']:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="tasks per level = rounds x level")
    parser.add_argument("--levels", default="100,500,1000", help="concurrency levels")
    parser.add_argument("--delay", type=float, default=1.0, help="the server's answer time, s")
    parser.add_argument("--client", choices=("openai", "raw"), default="openai",
                        help="AsyncOpenAI (the agent's handler) or a plain asyncio request")
    parser.add_argument("--stream", action="store_true",
                        help="the answer streamed in ten pieces over the second (AGENT_STREAM)")
    args = parser.parse_args()
    redis_server = RedisServerProcess(data_dir=tempfile.mkdtemp()).start()
    try:
        how = "AGENT_QUERY via AsyncOpenAI" if args.client == "openai" else "a plain asyncio request"
        how += ", streamed" if args.stream else ""
        print(f"one worker, {how}, server answers after {args.delay:g} s; "
              f"{os.cpu_count()} cores")
        levels = [int(v) for v in args.levels.split(",")]
        for f in async_levels(redis_server.url, levels, args.rounds, args.delay,
                              args.client == "raw", args.stream):
            print(f"concurrency {f['level']:>5}: {describe(f)}", flush=True)
    finally:
        redis_server.stop()


if __name__ == "__main__":
    main()
