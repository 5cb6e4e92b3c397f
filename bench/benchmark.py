"""Measure the queue on a private redis-server: ``python -m bench.benchmark [--sleep]``.

Reports enqueue rate (one call at a time, and bulk), the drain rate of one worker process
on no-op tasks, submit→result latency at light load, Redis CPU per task over its whole
life, one worker's agent calls through ``AsyncOpenAI`` at 100, 500 and 1,000 in flight
against a local server answering after 1 s (bench/async_concurrency.py; ``--no-async``
skips them), and (with --sleep) scaling with handlers that sleep 1 s like an LLM call.
Figures go in the README with the date and machine; nothing here is a pass/fail test.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from engine import Settings, Task, TaskQueue, TaskWorker
from engine.connection import connect
from engine.embedded import RedisServerProcess

ROOT = Path(__file__).resolve().parent.parent


def make_queue(url: str, namespace: str) -> TaskQueue:
    """A queue on ``url`` with the default settings and its own namespace."""
    return TaskQueue(connect(url), settings=Settings.from_mapping({}), namespace=namespace)


def redis_cpu_seconds(queue: TaskQueue) -> float:
    """Redis server CPU (user + sys) used so far, from INFO cpu."""
    info = queue.client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def noop_tasks(n: int) -> list[Task]:
    return [Task(task_type="noop", payload={"i": i}) for i in range(n)]


def bench_enqueue_single(queue: TaskQueue, n: int, rounds: int = 5) -> tuple[float, float]:
    """One submit_task at a time, in ``rounds`` rounds of n/rounds: (median, best) rate.
    This machine's noise only ever slows a round down, so the best round is the closest
    to what the code costs (as timeit reports); the median says what to expect."""
    rates = []
    for _ in range(rounds):
        tasks = noop_tasks(n // rounds)
        started = time.perf_counter()
        for task in tasks:
            queue.submit_task(task)
        rates.append(len(tasks) / (time.perf_counter() - started))
    return statistics.median(rates), max(rates)


def bench_enqueue_bulk(queue: TaskQueue, n: int, chunk: int = 10_000) -> float:
    tasks = noop_tasks(n)
    started = time.perf_counter()
    for i in range(0, n, chunk):
        queue.submit_tasks(tasks[i:i + chunk])
    return n / (time.perf_counter() - started)


def bench_drain(queue: TaskQueue, n: int, limit: str | None = None) -> tuple[float, float]:
    """Drain ``n`` no-op tasks with one in-process worker (this process is the worker
    process; the tasks were submitted beforehand). Returns (tasks/s, Redis µs per task
    over submit + claim + complete). With ``limit``, the handler runs under that provider
    limit key, capped far above the rate reached: what the limiter costs per task."""
    cpu0 = redis_cpu_seconds(queue)
    queue.submit_tasks(noop_tasks(n))
    worker = TaskWorker(queue)
    worker.register_handler("noop", lambda t: None, limit=limit)
    if limit:
        queue.set_limit(limit, rpm=100_000_000)
    started = time.perf_counter()
    stats = worker.start(burst=True)
    elapsed = time.perf_counter() - started
    cpu_us = (redis_cpu_seconds(queue) - cpu0) / n * 1e6
    assert stats["processed"] == n, stats
    return n / elapsed, cpu_us


def start_worker_process(url: str, namespace: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "REDIS_URL": url, "QUEUE_NAMESPACE": namespace}
    return subprocess.Popen([sys.executable, "worker.py", "--no-agent", "--handlers", "bench.handlers",
                             *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_ready(proc: subprocess.Popen) -> None:
    for line in proc.stdout:
        if line.rstrip().endswith("ready"):
            threading.Thread(target=proc.stdout.read, daemon=True).start()   # keep draining
            return
    raise RuntimeError("worker process exited before it was ready")


def bench_latency(queue: TaskQueue, url: str, n: int) -> tuple[float, float]:
    """Submit one task, wait for its result, repeat; a worker process does the work."""
    proc = start_worker_process(url, queue.namespace)
    try:
        wait_ready(proc)
        for _ in range(50):   # warm up connections and the script cache
            queue.wait_for_result(queue.submit_task(Task(task_type="noop")), timeout=5)
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            queue.wait_for_result(queue.submit_task(Task(task_type="noop")), timeout=5)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def bench_sleepers(queue: TaskQueue, url: str, workers: int, concurrency: int, n: int) -> float:
    """Tasks/s with handlers that sleep 1 s, across ``workers`` processes."""
    procs = [start_worker_process(url, queue.namespace, "--concurrency", str(concurrency))
             for _ in range(workers)]
    try:
        for proc in procs:
            wait_ready(proc)
        ids = queue.submit_tasks([Task(task_type="sleep", payload={"seconds": 1.0}) for _ in range(n)])
        started = time.perf_counter()
        for task_id in ids:
            queue.wait_for_result(task_id, timeout=n + 30)
        return n / (time.perf_counter() - started)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", help="benchmark this Redis instead of a private one")
    parser.add_argument("--sleep", action="store_true", help="also run the 1 s sleeper scaling runs (~1 min)")
    parser.add_argument("-n", type=int, default=50_000, help="tasks per throughput run")
    parser.add_argument("--no-async", action="store_true",
                        help="skip the async agent runs (bench/async_concurrency.py, ~50 s)")
    args = parser.parse_args()
    server, socket_url = None, None
    if not args.redis_url:
        # The private server listens on loopback TCP and on a unix socket (a local client's
        # usual choice: no TCP stack on either side); single submits are measured on both.
        server = RedisServerProcess()
        socket_path = server.data_dir / "redis.sock"
        server.extra_args = ("--unixsocket", str(socket_path), "--unixsocketperm", "700")
        server.start()
        socket_url = f"unix://{socket_path}"
    url = args.redis_url or server.url
    try:
        queue = make_queue(url, "bench")
        version = queue.client.info("server")["redis_version"]
        print(f"# {time.strftime('%Y-%m-%d')} on {machine()}, redis-server {version}")
        median, best = bench_enqueue_single(make_queue(url, "b1"), args.n // 2)
        print(f"enqueue, one call at a time : {median:>9,.0f} tasks/s (best round {best:,.0f})")
        if socket_url:
            median, best = bench_enqueue_single(make_queue(socket_url, "b1u"), args.n // 2)
            print(f"  the same on a unix socket : {median:>9,.0f} tasks/s (best round {best:,.0f})")
        print(f"enqueue, submit_tasks bulk  : {bench_enqueue_bulk(make_queue(url, 'b2'), args.n * 2):>9,.0f} tasks/s")
        rate, cpu_us = bench_drain(make_queue(url, "b3"), args.n)
        print(f"drain, 1 worker, no-op      : {rate:>9,.0f} tasks/s")
        print(f"Redis CPU per task lifetime : {cpu_us:>9.1f} µs (submit + claim + complete)")
        rate, cpu_us = bench_drain(make_queue(url, "b3l"), args.n, limit="bench provider")
        print(f"  the same under a limit key: {rate:>9,.0f} tasks/s, {cpu_us:.1f} µs Redis CPU a task")
        p50, p99 = bench_latency(make_queue(url, "b4"), url, 2000)
        print(f"latency submit→result       : p50 {p50:.2f} ms, p99 {p99:.2f} ms (light load)")
        if not args.no_async:
            from bench.async_concurrency import async_levels, describe
            for f in async_levels(url, [100, 500, 1000], rounds=5):
                print(f"async, AsyncOpenAI, {f['level']:>4} in flight, 1 s answers: {describe(f)}",
                      flush=True)
        if args.sleep:
            for workers in (1, 2, 4):
                rate = bench_sleepers(make_queue(url, f"s{workers}"), url, workers, 1, 10 * workers)
                print(f"1 s handlers, {workers} worker(s)    : {rate:>9.2f} tasks/s")
            rate = bench_sleepers(make_queue(url, "s50"), url, 1, 50, 250)
            print(f"1 s handlers, concurrency 50: {rate:>9.2f} tasks/s")
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    main()
