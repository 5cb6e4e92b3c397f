"""Prometheus metrics and health probes for a worker process (``worker.py --metrics-port``).

One small HTTP server per worker process serves:

- ``/metrics``: the Prometheus text format, built with the official ``prometheus-client``;
- ``/healthz``: 200 while the process is alive (a liveness probe);
- ``/readyz``: 200 when Redis answers and accepts a write, 503 otherwise (a readiness
  probe: out of memory under ``noeviction``, a read-only replica, an outage).

Cost on the worker's hot path: with metrics off, one attribute test per claimed batch and
per finished task (``TaskWorker.observer is None``). With metrics on, a finished task adds
a bisect and a few dict updates (no lock, no prometheus-client call): everything else is
read at scrape time, from the worker's own counters (``worker.stats``) and from Redis in
one pipelined round trip, whose duration is the Redis round-trip time reported.
"""
from __future__ import annotations

import bisect
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.process_collector import ProcessCollector

from .errors import QueueUnavailable, refusal
from .keys import PRIORITY_NAMES
from .reads import queue_depth

log = logging.getLogger("engine.observability")

PREFIX = "agent_queue"
# Seconds: from a no-op task to a long LLM call.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
           60.0, 120.0, 300.0, 600.0)
OTHER_TYPE = "other"    # task types this worker has no handler for: one label, not one each
PROBE_TTL_MS = 10_000


class _Histogram:
    """Bucket counts and a sum, updated without a lock from one thread at a time."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def family_buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs as Prometheus wants them."""
        out, running = [], 0
        for bound, count in zip((*BUCKETS, float("inf")), self.counts):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


class WorkerMetrics:
    """The worker's observer (``TaskWorker.observer``) and a prometheus-client collector.

    ``claimed`` runs in the claiming thread and ``finished`` in the reporting thread (the
    worker's main thread, or its writer thread with concurrency > 1): each structure here
    is written by one thread only.
    """

    def __init__(self, worker: Any):
        self.worker = worker
        self.claims = 0
        self.claimed_tasks = 0
        self.runs: dict[tuple[str, str], int] = {}
        self.run_seconds: dict[str, _Histogram] = {}
        self.wait_seconds: dict[str, _Histogram] = {}

    def _label(self, task_type: str) -> str:
        return task_type if task_type in self.worker.handler_types else OTHER_TYPE

    # -- hooks (TaskWorker calls these) -------------------------------------------------
    def claimed(self, tasks: list) -> None:
        """A claim returned ``tasks``: count it, and the queue wait of first attempts
        (from submission, or from the due time the claim cannot see: a delayed task's
        wait includes its delay)."""
        if not tasks:
            return
        self.claims += 1
        self.claimed_tasks += len(tasks)
        now_ms = time.time() * 1000
        for task in tasks:
            if task.attempt == 1 and task.created_at_ms:
                label = self._label(task.task_type)
                histogram = self.wait_seconds.get(label) or self.wait_seconds.setdefault(label, _Histogram())
                histogram.observe(max(0.0, (now_ms - task.created_at_ms) / 1000))

    def finished(self, outcome: Any) -> None:
        """A handler returned (engine/execution.py: ``Completed``) or raised (``Failed``)."""
        label = self._label(outcome.task.task_type)
        key = (label, "ok" if outcome.ok else "error")
        self.runs[key] = self.runs.get(key, 0) + 1
        if outcome.ok:
            histogram = self.run_seconds.get(label) or self.run_seconds.setdefault(label, _Histogram())
            histogram.observe(outcome.duration_ms / 1000)

    # -- scrape (prometheus-client calls this) ------------------------------------------
    def collect(self) -> Iterable[Any]:
        """The worker's metrics, read now."""
        worker = self.worker
        outcomes = CounterMetricFamily(f"{PREFIX}_worker_tasks", "Tasks this worker reported, by "
                                       "outcome as Redis recorded it", labels=["outcome"])
        for name in ("processed", "failed", "retried", "lost", "deferred"):
            outcomes.add_metric([name], worker.stats.get(name, 0))
        yield outcomes
        runs = CounterMetricFamily(f"{PREFIX}_worker_handler_runs", "Handler runs by task type "
                                   "and result (ok, or error: raised)", labels=["task_type", "result"])
        for (task_type, result), count in sorted(dict(self.runs).items()):
            runs.add_metric([task_type, result], count)
        yield runs
        yield from self._histograms(f"{PREFIX}_worker_run_seconds",
                                    "Handler run time of successful tasks", self.run_seconds)
        yield from self._histograms(f"{PREFIX}_worker_queue_wait_seconds",
                                    "Time from submission to claim (first attempts)", self.wait_seconds)
        yield CounterMetricFamily(f"{PREFIX}_worker_claims", "Claims that returned tasks",
                                  value=self.claims)
        yield CounterMetricFamily(f"{PREFIX}_worker_claimed_tasks", "Tasks claimed",
                                  value=self.claimed_tasks)
        yield GaugeMetricFamily(f"{PREFIX}_worker_in_flight", "Tasks claimed and not yet reported",
                                value=worker.in_flight)
        yield GaugeMetricFamily(f"{PREFIX}_worker_concurrency", "Handler slots",
                                value=worker.concurrency)

    @staticmethod
    def _histograms(name: str, documentation: str, by_type: dict[str, _Histogram]) -> Iterable[Any]:
        family = HistogramMetricFamily(name, documentation, labels=["task_type"])
        for task_type, histogram in sorted(dict(by_type).items()):
            family.add_metric([task_type], histogram.family_buckets(), sum_value=histogram.total)
        yield family


class QueueMetrics:
    """Queue gauges read from Redis in one pipelined round trip per scrape."""

    def __init__(self, queue: Any):
        self.queue = queue

    def collect(self) -> Iterable[Any]:
        """Depth by priority, scheduled, running, dead letters, and the round trip's time."""
        k = self.queue.keys
        pipe = self.queue.client.pipeline(transaction=False)
        for name in PRIORITY_NAMES:
            pipe.llen(k.queue(name))
            pipe.hmget(k.group_counts(name), "tasks", "groups")
        pipe.zcard(k.scheduled)
        pipe.zcard(k.status["running"])
        pipe.zcard(k.status["failed"])
        pipe.hmget(k.usage_total, "prompt_tokens", "completion_tokens", "cost_nanos", "calls")
        started = time.perf_counter()
        try:
            replies = pipe.execute(raise_on_error=False)
            spend = replies.pop()           # a hand-edited key of another type: no spend shown
            if any(isinstance(reply, Exception) for reply in replies):
                raise next(reply for reply in replies if isinstance(reply, Exception))
        except (redis.RedisError, OSError):
            yield GaugeMetricFamily(f"{PREFIX}_redis_up", "Whether the last scrape read Redis", value=0)
            return
        elapsed = time.perf_counter() - started
        yield GaugeMetricFamily(f"{PREFIX}_redis_up", "Whether the last scrape read Redis", value=1)
        yield GaugeMetricFamily(f"{PREFIX}_redis_roundtrip_seconds",
                                "Duration of this scrape's one pipelined round trip to Redis",
                                value=elapsed)
        depth = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Tasks waiting, by priority",
                                  labels=["priority"])
        for i, name in enumerate(PRIORITY_NAMES):
            depth.add_metric([name], queue_depth(replies[2 * i], replies[2 * i + 1]))
        yield depth
        rest = replies[2 * len(PRIORITY_NAMES):]
        yield GaugeMetricFamily(f"{PREFIX}_queue_scheduled", "Tasks due later", value=rest[0])
        yield GaugeMetricFamily(f"{PREFIX}_queue_running", "Tasks being run by any worker",
                                value=rest[1])
        yield GaugeMetricFamily(f"{PREFIX}_queue_dead_letters", "Failed tasks kept (dead letters)",
                                value=rest[2])
        yield from _spend_metrics(spend)


def _spend_metrics(values: Any) -> Iterable[Any]:
    """The fleet's model calls, tokens and cost as counted in Redis (engine/usage.py)."""
    try:
        prompt, completion, nanos, calls = (int(v or 0) for v in values)
    except (TypeError, ValueError):
        prompt = completion = nanos = calls = 0
    tokens = CounterMetricFamily(f"{PREFIX}_model_tokens", "Tokens of the model calls counted "
                                 "by every worker, by kind", labels=["kind"])
    tokens.add_metric(["prompt"], prompt)
    tokens.add_metric(["completion"], completion)
    yield tokens
    yield CounterMetricFamily(f"{PREFIX}_model_calls", "Model calls counted by every worker",
                              value=calls)
    yield CounterMetricFamily(f"{PREFIX}_model_cost_dollars", "Cost of the model calls counted "
                              "by every worker (priced ones: AGENT_PRICES)", value=nanos / 1e9)


def readiness(queue: Any, worker_id: str) -> tuple[bool, str]:
    """Whether Redis answers and accepts a write: a short-lived probe key is set."""
    try:
        queue.client.set(queue.keys.probe, worker_id, px=PROBE_TTL_MS)
    except redis.ResponseError as exc:
        refused = refusal(exc)
        return False, str(refused) if refused else f"Redis refused the probe ({type(exc).__name__})"
    except (redis.RedisError, OSError, QueueUnavailable) as exc:
        return False, f"Redis unreachable ({type(exc).__name__})"
    return True, "ready"


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` in a daemon thread."""

    def __init__(self, worker: Any, port: int, host: str = "0.0.0.0"):
        self.worker = worker
        self.registry = CollectorRegistry(auto_describe=False)
        self.metrics = WorkerMetrics(worker)
        self.registry.register(self.metrics)
        self.registry.register(QueueMetrics(worker.queue))
        ProcessCollector(registry=self.registry)
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return self._server.server_address[1]

    def start(self) -> "MetricsServer":
        """Attach the observer to the worker and serve in a daemon thread."""
        self.worker.observer = self.metrics
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and detach from the worker."""
        self.worker.observer = None
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n")
                elif path == "/readyz":
                    ready, why = readiness(server.worker.queue, server.worker.worker_id)
                    self._send(200 if ready else 503, (why + "\n").encode())
                else:
                    self._send(404, b"not found: /metrics, /healthz, /readyz\n")

            def _send(self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:   # scrapes every few seconds: not logged
                pass

        return Handler
