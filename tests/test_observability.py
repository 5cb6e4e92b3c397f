"""Prometheus metrics and health probes of a worker: scraped over HTTP and parsed with
prometheus-client's own parser."""
from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from engine import PermanentError, Task, TaskQueue, TaskWorker
from engine.connection import connect
from engine.observability import MetricsServer
from tests.support.processes import WorkerProcess, worker_env


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels): value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def served(queue):
    def fail(task):
        raise PermanentError("no")
    worker = TaskWorker(queue, handlers={"echo": lambda t: t.payload, "boom": fail})
    server = MetricsServer(worker, 0, "127.0.0.1").start()
    yield worker, server
    server.stop()


def test_metrics_count_outcomes_types_and_times(served, queue):
    worker, server = served
    queue.submit_tasks([Task(task_type="echo", payload={"i": i}) for i in range(3)])
    queue.submit_task(Task(task_type="boom"))
    queue.submit_task(Task(task_type="mystery", max_retries=0))   # no handler: "other"
    while worker.process_one():
        pass
    queue.submit_tasks([Task(task_type="echo", priority="high") for _ in range(2)])
    queue.submit_task(Task(task_type="echo", delay=3600))
    m = scrape(server.port)
    assert m[("agent_queue_worker_tasks_total", (("outcome", "processed"),))] == 3
    assert m[("agent_queue_worker_tasks_total", (("outcome", "failed"),))] == 2
    assert m[("agent_queue_worker_handler_runs_total", (("result", "ok"), ("task_type", "echo")))] == 3
    assert m[("agent_queue_worker_handler_runs_total", (("result", "error"), ("task_type", "boom")))] == 1
    assert m[("agent_queue_worker_handler_runs_total", (("result", "error"), ("task_type", "other")))] == 1
    assert m[("agent_queue_worker_run_seconds_count", (("task_type", "echo"),))] == 3
    assert m[("agent_queue_worker_run_seconds_bucket", (("le", "+Inf"), ("task_type", "echo")))] == 3
    assert m[("agent_queue_worker_queue_wait_seconds_count", (("task_type", "echo"),))] == 3
    assert m[("agent_queue_worker_claimed_tasks_total", ())] == 5
    assert m[("agent_queue_worker_claims_total", ())] == 5
    assert m[("agent_queue_worker_in_flight", ())] == 0
    assert m[("agent_queue_queue_depth", (("priority", "high"),))] == 2
    assert m[("agent_queue_queue_depth", (("priority", "normal"),))] == 0
    assert m[("agent_queue_queue_scheduled", ())] == 1
    assert m[("agent_queue_queue_dead_letters", ())] == 2
    assert m[("agent_queue_redis_up", ())] == 1
    assert 0 < m[("agent_queue_redis_roundtrip_seconds", ())] < 1
    assert m[("agent_queue_model_calls_total", ())] == 0
    assert ("process_resident_memory_bytes", ()) in m


def test_queue_gauges_are_one_round_trip(served, queue, monkeypatch):
    _, server = served
    sent = []
    original = redis.client.Pipeline.execute

    def execute(pipe, *args, **kwargs):
        sent.append(len(pipe.command_stack))
        return original(pipe, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    commands = []
    monkeypatch.setattr(queue.client, "execute_command",
                        lambda *a, **k: commands.append(a[0]) or redis.Redis.execute_command(queue.client, *a, **k))
    scrape(server.port)
    assert sent == [12] and commands == []     # 4 depths (and their groups), 3 counts, spend


def test_health_and_readiness_probes(queue, redis_process, namespace):
    client = connect(redis_process.url)
    private = TaskQueue(client, settings=queue.settings, namespace=namespace)
    server = MetricsServer(TaskWorker(private, handlers={"echo": lambda t: 1}), 0, "127.0.0.1").start()
    try:
        assert get(server.port, "/healthz") == (200, "ok\n")
        assert get(server.port, "/readyz") == (200, "ready\n")
        client.config_set("maxmemory", 1)                      # noeviction: writes refused
        status, body = get(server.port, "/readyz")
        assert status == 503 and "out of memory" in body
        client.config_set("maxmemory", 0)
        assert get(server.port, "/readyz")[0] == 200
        redis_process.stop()
        status, body = get(server.port, "/readyz")
        assert status == 503 and "unreachable" in body
        assert get(server.port, "/healthz")[0] == 200         # alive, only not ready
        assert scrape(server.port)[("agent_queue_redis_up", ())] == 0
        assert get(server.port, "/nope")[0] == 404
    finally:
        server.stop()


def test_worker_cli_serves_metrics(redis_url, namespace, queue):
    process = WorkerProcess(worker_env(redis_url, namespace), "--metrics-port", "0",
                            "--metrics-host", "127.0.0.1")
    try:
        port = int(process.wait_for_line(r"Metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
        ids = queue.submit_tasks([Task(task_type="echo") for _ in range(4)])
        for task_id in ids:
            queue.wait_for_result(task_id, timeout=10)
        deadline = time.monotonic() + 10
        while scrape(port).get(("agent_queue_worker_tasks_total", (("outcome", "processed"),))) != 4:
            assert time.monotonic() < deadline, "processed count never reached 4"
            time.sleep(0.05)
        assert get(port, "/readyz")[0] == 200
    finally:
        process.close()


def test_the_grafana_dashboard_uses_only_metrics_the_worker_serves(served, queue):
    import json
    import re
    from pathlib import Path
    worker, server = served
    queue.submit_task(Task(task_type="echo"))
    worker.process_one()
    served_names = {name for name, _ in scrape(server.port)}
    dashboard = json.loads((Path(__file__).parent.parent / "docs" / "grafana-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"agent_queue_\w+", target["expr"])}
    assert used and used <= served_names, used - served_names


def test_the_fleets_tokens_and_cost_are_counters(served, queue, redis_client):
    _, server = served
    task_id = queue.submit_task(Task(task_type="echo"))
    queue.store.usage([(task_id, "gpt-4o-mini", 1000, 500, 1500, 450_000),
                       (task_id, "llama3", 10, 5, 15, None)])
    m = scrape(server.port)
    assert m[("agent_queue_model_tokens_total", (("kind", "prompt"),))] == 1010
    assert m[("agent_queue_model_tokens_total", (("kind", "completion"),))] == 505
    assert m[("agent_queue_model_calls_total", ())] == 2
    assert m[("agent_queue_model_cost_dollars_total", ())] == pytest.approx(0.00045)
    redis_client.delete(queue.keys.usage_total)
    redis_client.set(queue.keys.usage_total, "not a hash")      # hand-edited: no spend, Redis up
    m = scrape(server.port)
    assert m[("agent_queue_redis_up", ())] == 1 and m[("agent_queue_model_calls_total", ())] == 0
