"""Headless worker process: ``python worker.py [--concurrency N] [--burst] [--handlers M] [--name X]``.

Run as many as you need, on as many machines, all pointed at one Redis (``REDIS_URL``).
Ctrl+C or SIGTERM: stop claiming, finish the tasks in hand, print stats, exit 0.
A second Ctrl+C: hand unfinished tasks back to the queue at once and exit.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import resource
import signal
import sys
import time

import redis

from engine import ConfigurationError, QueueError, Settings, TaskQueue, TaskWorker
from engine.config import mask_url
from engine.connection import connect_settings
from engine.health import HealthMonitor, check_redis, refuse_unsafe_redis

RULE = "=" * 80


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description="Run a task queue worker.")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="handler slots for I/O-bound handlers such as LLM calls: threads, "
                             "or coroutines on one event loop once a handler is async def")
    parser.add_argument("--burst", action="store_true", help="drain what is due, then exit")
    parser.add_argument("--handlers", action="append", default=[], metavar="MODULE",
                        help="import MODULE and call its register(worker) (repeatable)")
    parser.add_argument("--name", help="a display name for this worker")
    parser.add_argument("--no-agent", action="store_true",
                        help="do not register the agent handlers (agent_query)")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    parser.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve Prometheus /metrics, /healthz and /readyz on PORT")
    parser.add_argument("--metrics-host", default="0.0.0.0", metavar="HOST",
                        help="address the metrics server binds (default 0.0.0.0, for scrapers)")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def load_handler_module(worker: TaskWorker, path: str) -> None:
    """Import ``path`` and let it register handlers: ``register(worker)`` or a ``HANDLERS``
    dict of task type → function."""
    module = importlib.import_module(path)
    if hasattr(module, "register"):
        module.register(worker)
    elif isinstance(getattr(module, "HANDLERS", None), dict):
        for task_type, fn in module.HANDLERS.items():
            worker.register_handler(task_type, fn)
    else:
        raise ConfigurationError(f"handler module {path} has neither register(worker) nor HANDLERS")


def connect_with_backoff(settings: Settings) -> TaskQueue:
    """Build the queue, waiting for Redis with backoff if it is not up yet."""
    delay, said = 0.5, False
    while True:
        try:
            client = connect_settings(settings)
            client.ping()
            return TaskQueue(client, settings=settings)
        except ConfigurationError:
            raise   # a URL redis-py cannot use will not get better by waiting
        except Exception as exc:  # redis-py raises several kinds here; all mean "not yet"
            if not said:
                print(f"Redis at {mask_url(settings.connection_url())} unreachable "
                      f"({type(exc).__name__}); retrying with backoff...", flush=True)
                said = True
            time.sleep(delay)
            delay = min(10.0, delay * 2)


def check_server(queue: TaskQueue, settings: Settings) -> None:
    """Refuse an evicting Redis (ConfigurationError) unless QUEUE_ALLOW_EVICTION, print the
    warnings, and keep checking every minute while the worker runs (engine/health.py)."""
    try:
        health = check_redis(queue.client, queue.keys.stats)
    except (redis.RedisError, OSError):
        health = None       # gone again since the ping: the worker waits that out itself
    if health is not None:
        for line in refuse_unsafe_redis(health, settings.allow_eviction):
            print(f"warning: {line}", file=sys.stderr, flush=True)
    HealthMonitor(queue.client, queue.keys.stats, first=health).start()


def install_signal_handlers(worker: TaskWorker) -> None:
    """First signal: graceful stop. Second: hand tasks back and leave now."""
    def on_signal(signum, frame):
        if worker.stopping:
            print("\nSecond signal: handing unfinished tasks back to the queue...", flush=True)
            worker.abort()
        else:
            print("\nStopping: no new tasks; finishing the ones in hand "
                  "(press Ctrl+C again to hand them back now)...", flush=True)
            worker.stop()
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def raise_open_file_limit(concurrency: int) -> None:
    """Room for a connection per slot: a thousand calls in flight need more sockets than
    the usual soft limit of 1,024 open files (raised up to the hard limit, never above)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * concurrency + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    raise_open_file_limit(args.concurrency)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    print(RULE + "\nTask Queue Worker\n" + RULE + "\n", flush=True)
    try:
        print("Initializing configuration...", flush=True)
        settings = Settings.from_env()
        if not args.no_agent:
            from engine.agent import build_backend
            backend = build_backend(settings)
            print(f"Initializing LLM... backend={backend.name} model={backend.model}", flush=True)
            print(" Initializing tools...", flush=True)
            print("Initializing agent executor...", flush=True)
        print(f"Connecting to task queue... {mask_url(settings.connection_url())} "
              f"namespace={settings.namespace}", flush=True)
        queue = connect_with_backoff(settings)
        check_server(queue, settings)
        print("Redis task queue initialized", flush=True)
        print("Creating worker...", flush=True)
        worker = TaskWorker(queue, concurrency=args.concurrency, name=args.name)
        if not args.no_agent:
            from engine.agent import AgentExecutor, register_handlers
            register_handlers(worker, settings, AgentExecutor(queue=queue, backend=backend))
        for path in args.handlers:
            load_handler_module(worker, path)
        if args.metrics_port is not None:
            from engine.observability import MetricsServer
            metrics = MetricsServer(worker, args.metrics_port, args.metrics_host).start()
            print(f"Metrics on http://{args.metrics_host}:{metrics.port}/metrics "
                  "(/healthz, /readyz)", flush=True)
    except (ConfigurationError, QueueError, ImportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    install_signal_handlers(worker)
    print("\n" + RULE, flush=True)
    print(f"Worker {worker.worker_id} starting... (concurrency {worker.concurrency}, "
          f"handlers: {', '.join(worker.handler_types) or 'none'})", flush=True)
    started = time.monotonic()
    worker.on_ready = lambda: print(f"Worker {worker.worker_id} ready", flush=True)
    stats = worker.start(burst=args.burst)
    uptime = time.monotonic() - started
    print(f"Worker {worker.worker_id} stopped after {uptime:.1f} s: processed {stats['processed']}, "
          f"failed {stats['failed']}, retried {stats['retried']}, lost {stats['lost']}, "
          f"deferred by rate limits {stats['deferred']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
