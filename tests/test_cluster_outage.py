"""Redis Cluster outages: a master SIGKILLed and restarted, or replaced by its replica, and
a reshard that moves the queue's slot under load.

Every cluster-state error (CLUSTERDOWN from every node while a slot is uncovered, a
layout the client cannot read, TRYAGAIN, MOVED storms) is an outage that ``worker.py``
waits out with backoff: every worker process is still alive afterwards and runs the
tasks submitted after the recovery, and no acknowledged task of a surviving master is
lost. Submitters get ``QueueUnavailable`` meanwhile, never a raw redis-py error.

Nodes use a 1 s ``cluster-node-timeout`` so a failure is noticed within about 2 s.
"""
from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest
import redis

from engine import QueueUnavailable, Settings, Task, TaskQueue
from engine.errors import cluster_outage, translate_redis_errors
from tests.support.cluster import LocalCluster, namespace_slot, wait_for
from tests.support.processes import WorkerProcess, worker_env

pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None,
                                reason="redis-cli is not installed: cannot form a cluster")


@pytest.fixture
def make_cluster(redis_server_bin, tmp_path):
    clusters: list[LocalCluster] = []

    def make(**kwargs) -> LocalCluster:
        cluster = LocalCluster(redis_server_bin, tmp_path / f"cluster{len(clusters)}", **kwargs)
        clusters.append(cluster)
        return cluster.start()

    yield make
    for cluster in clusters:
        cluster.close()


@pytest.fixture
def workers():
    started: list[WorkerProcess] = []

    def start(url: str, namespace: str) -> WorkerProcess:
        process = WorkerProcess(worker_env(url, namespace, REDIS_CLUSTER="true"))
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def cluster_queue(url: str, namespace: str) -> TaskQueue:
    return TaskQueue(settings=Settings.from_mapping({
        "REDIS_URL": url, "REDIS_CLUSTER": "true", "QUEUE_NAMESPACE": namespace,
        "QUEUE_LEASE_TIMEOUT": "1", "QUEUE_HEARTBEAT_INTERVAL": "0.2"}))


def two_namespaces(cluster: LocalCluster, workers) -> tuple:
    """The master to kill, a surviving master, a node URL, a queue whose slot each of the two
    masters serves, and a ready worker process on each queue."""
    doomed, survivor, entry = cluster.masters()
    url = cluster.url(entry)
    on_doomed = cluster_queue(url, cluster.namespace_on(doomed, "d"))
    on_survivor = cluster_queue(url, cluster.namespace_on(survivor, "s"))
    processes = [workers(url, q.namespace) for q in (on_doomed, on_survivor)]
    for process in processes:
        process.wait_for_line(r"Worker worker-\w+ ready")
    return doomed, survivor, url, on_doomed, on_survivor, processes


def submit(queue: TaskQueue, count: int, seconds: float = 0.0) -> list[str]:
    return queue.submit_tasks([Task(task_type="sleep", payload={"seconds": seconds})
                               for _ in range(count)])


def assert_all_completed(queue: TaskQueue, ids: list[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for task_id in ids:
        result = queue.wait_for_result(task_id, timeout=max(0.1, deadline - time.monotonic()))
        assert result["status"] == "completed", result


def assert_alive(processes: list[WorkerProcess]) -> None:
    for process in processes:
        assert process.proc.poll() is None, process.output()


def test_master_killed_and_restarted_without_replicas(make_cluster, workers):
    # AOF with fsync always on every node: the restarted master comes back with its data,
    # so here no acknowledged task is lost at all.
    cluster = make_cluster(masters=3, replicas=0, appendonly=True)
    doomed, survivor, url, on_doomed, on_survivor, processes = two_namespaces(cluster, workers)
    # Enough work that the kill lands while tasks are pending and running.
    before = {q.namespace: submit(q, 150, 0.01) for q in (on_doomed, on_survivor)}

    cluster.kill(doomed)
    cluster.wait_fail(survivor)          # every node now answers CLUSTERDOWN
    for verb in (lambda: on_survivor.submit_task(Task(task_type="sleep")),
                 on_survivor.get_queue_stats):
        with pytest.raises(QueueUnavailable, match="Redis Cluster is not serving"):
            verb()
    # A worker started while the cluster is down waits for it instead of exiting.
    processes.append(workers(url, on_survivor.namespace))
    processes[-1].wait_for_line(r"Redis unreachable \(ClusterDownError\)", timeout=15, stream="stderr")
    assert_alive(processes)

    cluster.start_node(doomed)
    cluster.wait_ok()
    after = {q.namespace: submit(q, 20) for q in (on_doomed, on_survivor)}
    for queue in (on_doomed, on_survivor):
        assert_all_completed(queue, after[queue.namespace] + before[queue.namespace])
    assert_alive(processes)
    assert on_survivor.get_queue_stats().completed_tasks == 170
    # The late worker took part once the cluster was back.
    late = processes[-1].worker_id
    assert any(w["worker_id"] == late for w in on_survivor.list_workers())


def test_master_replaced_by_its_replica_then_back_as_a_replica(make_cluster, workers):
    cluster = make_cluster(masters=3, replicas=1)
    doomed, survivor, url, on_doomed, on_survivor, processes = two_namespaces(cluster, workers)
    before = submit(on_survivor, 150, 0.01)
    submit(on_doomed, 150, 0.01)          # replication is asynchronous: these may be lost

    cluster.kill(doomed)

    def promoted() -> int | None:
        master = cluster.master_of_slot(cluster_slot(on_doomed), ask=survivor)
        return master if master != doomed else None

    slot_master = wait_for(promoted, "the replica to be promoted", 30)
    cluster.wait_ok()
    middle = {q.namespace: submit(q, 20) for q in (on_doomed, on_survivor)}
    assert_all_completed(on_doomed, middle[on_doomed.namespace])

    cluster.start_node(doomed)            # the old master comes back as a replica
    wait_for(lambda: cluster.role(doomed) == "slave", "the old master to rejoin as a replica", 30)
    cluster.wait_ok()
    after = {q.namespace: submit(q, 20) for q in (on_doomed, on_survivor)}
    assert_all_completed(on_doomed, after[on_doomed.namespace])
    assert_all_completed(on_survivor, before + middle[on_survivor.namespace]
                         + after[on_survivor.namespace])
    assert slot_master != doomed and cluster.role(slot_master) == "master"
    assert_alive(processes)


def cluster_slot(queue: TaskQueue) -> int:
    return queue.client.keyslot(queue.keys.stats)


@pytest.mark.parametrize("error", [
    redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
    redis.exceptions.MasterDownError("MASTERDOWN Link with MASTER is down"),
    redis.exceptions.TryAgainError("TRYAGAIN"),
    redis.exceptions.MovedError("3999 127.0.0.1:6381"),
    redis.exceptions.ClusterError("TTL exhausted."),
    redis.exceptions.SlotNotCoveredError('Slot "5" not covered by the cluster.'),
    redis.exceptions.RedisClusterException("Redis Cluster cannot be connected. Please provide at "
                                           "least one reachable node: Timeout"),
])
def test_every_cluster_state_error_is_translated_to_queue_unavailable(error):
    assert cluster_outage(error)
    with pytest.raises(QueueUnavailable):
        with translate_redis_errors():
            raise error


def test_cluster_misuse_is_not_mistaken_for_an_outage():
    misuse = redis.exceptions.RedisClusterException("ERROR: Calling pipelined function eval is "
                                                    "blocked when running redis in cluster mode...")
    assert not cluster_outage(misuse)
    with pytest.raises(redis.exceptions.RedisClusterException):
        with translate_redis_errors():
            raise misuse
    with pytest.raises(redis.exceptions.ClusterCrossSlotError):
        with translate_redis_errors():
            raise redis.exceptions.ClusterCrossSlotError("CROSSSLOT")


def test_a_reshard_under_load_moves_the_queue_without_an_error(make_cluster, workers):
    # Every slot of the master holding the namespace moves to another master while tasks
    # are submitted and run: MOVED and ASK redirections, TRYAGAIN while the slot's keys
    # migrate. Nothing surfaces to the submitter or the worker, and every task completes.
    cluster = make_cluster(masters=3, replicas=0)
    source, target, entry = cluster.masters()
    url = cluster.url(entry)
    queue = cluster_queue(url, cluster.namespace_on(source, "r"))
    process = workers(url, queue.namespace)
    process.wait_for_line(r"Worker worker-\w+ ready")
    ids, refused, stop = [], [], threading.Event()

    def submit_steadily() -> None:
        while not stop.is_set():
            try:
                ids.append(queue.submit_task(Task(task_type="sleep", payload={"seconds": 0.002})))
            except QueueUnavailable as exc:       # allowed, but counted
                refused.append(str(exc))
            stop.wait(0.002)

    submitter = threading.Thread(target=submit_steadily)
    submitter.start()
    try:
        wait_for(lambda: len(ids) > 50, "tasks to flow before the reshard", 15)
        node = {port: cluster.client(port).execute_command("CLUSTER", "MYID")
                for port in (source, target)}
        subprocess.run(["redis-cli", "--cluster", "reshard", f"127.0.0.1:{entry}",
                        "--cluster-from", node[source], "--cluster-to", node[target],
                        "--cluster-slots", "5461", "--cluster-yes", "--cluster-pipeline", "1000"],
                       check=True, capture_output=True, timeout=120)
        count = len(ids)
        wait_for(lambda: len(ids) > count + 50, "tasks to flow after the reshard", 15)
    finally:
        stop.set()
        submitter.join(timeout=10)
    assert cluster.master_of_slot(namespace_slot(queue.namespace)) == target
    assert_all_completed(queue, ids)
    assert_alive([process])
    assert refused == []
