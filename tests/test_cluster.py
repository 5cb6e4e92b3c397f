"""Redis Cluster: a namespace's keys share one hash tag, so every script runs on one node.

Forms a private 3-master cluster (about 2 s) and runs the queue's main paths through
redis-py's cluster client, whose pipelines refuse scripts and TIME.
"""
from __future__ import annotations

import random
import shutil
import socket
import subprocess
import threading
import time

import pytest
import redis

from engine import Settings, Task, TaskQueue, TaskType, TaskWorker


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000, so at most 55535) is free too."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise AssertionError("no free pair of ports for a cluster node")


def _start_node(binary: str, directory, port: int) -> subprocess.Popen:
    directory.mkdir()
    return subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                             "--save", "", "--appendonly", "no", "--dir", str(directory),
                             "--logfile", str(directory / "redis.log")],
                            cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(predicate, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what() if callable(what) else what} within {seconds} s")


def _tail(path) -> str:
    return path.read_text()[-500:] if path.exists() else "(no log)"


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory, redis_server_bin):
    """The URL of one node of a private 3-master Redis Cluster."""
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed: cannot form a cluster")
    base = tmp_path_factory.mktemp("cluster")
    ports = [_cluster_port() for _ in range(3)]
    nodes = [_start_node(redis_server_bin, base / str(p), p) for p in ports]
    try:
        for port, node in zip(ports, nodes):
            _wait(lambda: redis.Redis(host="127.0.0.1", port=port).ping(),
                  lambda: f"node {port} did not answer (exit code {node.poll()}, log: "
                          f"{_tail(base / str(port) / 'redis.log')!r})")
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True)
        _wait(lambda: all(redis.Redis(host="127.0.0.1", port=p).cluster("info")["cluster_state"] == "ok" for p in ports),
              "the cluster did not reach state ok")
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            node.wait(timeout=5)


@pytest.fixture
def cluster_queue(cluster_url, namespace):
    settings = Settings.from_mapping({"REDIS_URL": cluster_url, "REDIS_CLUSTER": "true",
                                      "QUEUE_NAMESPACE": namespace})
    queue = TaskQueue(settings=settings)
    yield queue
    for key in queue.client.scan_iter(match="{%s}:*" % namespace, target_nodes=RedisClusterAll):
        queue.client.delete(key)


RedisClusterAll = redis.RedisCluster.ALL_NODES


def test_the_namespace_lives_in_one_slot(cluster_queue):
    task_id = cluster_queue.submit_task(Task(task_type="echo"))
    keys = [cluster_queue.keys.task(task_id), cluster_queue.keys.queues[2], cluster_queue.keys.stats]
    assert len({cluster_queue.client.keyslot(k) for k in keys}) == 1


def test_submit_run_and_read_through_the_cluster_client(cluster_queue):
    single = cluster_queue.submit_task(Task(task_type="echo", payload={"n": -1}, priority="urgent"))
    bulk = cluster_queue.submit_tasks([Task(task_type="echo", payload={"n": i}) for i in range(3000)])
    order: list[int] = []
    worker = TaskWorker(cluster_queue, handlers={"echo": lambda t: order.append(t.payload["n"]) or t.payload})
    stats = worker.start(burst=True)
    assert stats["processed"] == 3001 and order[:3] == [-1, 0, 1]
    assert cluster_queue.get_task_result(single)["result"] == {"n": -1}
    assert cluster_queue.get_task_result(bulk[-1])["status"] == "completed"
    counts = cluster_queue.get_queue_stats()
    assert (counts.completed_tasks, counts.pending_tasks) == (3001, 0)


def test_batches_waiting_and_events_through_the_cluster_client(cluster_queue):
    seen: list[str] = []
    subscription = cluster_queue.subscribe_to_events(lambda message: seen.append(message["data"]))
    try:
        batch_id = cluster_queue.submit_task(Task(task_type=TaskType.BATCH_QUERY,
                                                  payload={"queries": ["a", "b", "c"]}))
        worker = TaskWorker(cluster_queue, handlers={
            TaskType.AGENT_QUERY: lambda t: {"answer": t.payload["query"].upper()}})
        runner = threading.Thread(target=worker.start, kwargs={"burst": True})
        runner.start()
        result = cluster_queue.wait_for_result(batch_id, timeout=10)
        runner.join(timeout=10)
        assert result["result"]["answers"] == ["A", "B", "C"]
        _wait(lambda: any('"task.completed"' in text for text in seen), "no event arrived", 5)
    finally:
        subscription.stop()
    cluster_queue.cancel_task(cluster_queue.submit_task(Task(task_type=TaskType.BATCH_QUERY,
                                                             payload={"queries": ["x", "y"]})))
    assert cluster_queue.count_tasks("cancelled") == 3


def test_tokens_cost_and_budgets_through_the_cluster_client(cluster_queue):
    task_id = cluster_queue.submit_task(Task(task_type="echo", session_id="s"))
    assert cluster_queue.store.usage([(task_id, "gpt-4o-mini", 1000, 500, 1500, 450_000)]) == [1]
    cluster_queue.set_budget(session_id="s", tokens=1000)
    totals = cluster_queue.usage_totals(5)
    assert totals["sessions"]["s"]["total_tokens"] == 1500 and len(totals["minutes"]) == 5
    assert cluster_queue.budgets()[0]["exhausted"]
    assert cluster_queue.get_task_status(task_id)["usage"]["total_tokens"] == 1500
    cluster_queue.set_limit("openai api.openai.com m", rpm=600, concurrency=4)
    [state] = cluster_queue.limit_states()
    assert state["configured"] == {"rpm": 600.0, "tpm": None, "concurrency": 4}
