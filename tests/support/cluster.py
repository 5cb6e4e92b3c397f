"""A private Redis Cluster on loopback ports whose nodes a test can SIGKILL and restart.

Each node runs in its own directory (its ``nodes.conf`` survives a restart, so a node
comes back with its identity and slots) with a short ``cluster-node-timeout`` so that a
failure is noticed, and a replica promoted, within a couple of seconds.
"""
from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.crc import key_slot


def free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(500):
        port = random.randint(20000, 45000)
        if port in taken or port + 10000 in taken:
            continue
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        taken.update((port, port + 10000))
        return port
    raise AssertionError("no free pair of ports for a cluster node")


def namespace_slot(namespace: str) -> int:
    """The hash slot every key of ``namespace`` lives in (its hash tag)."""
    return key_slot(("{%s}:task:x" % namespace).encode())


def wait_for(predicate, what: str, seconds: float = 30.0, step: float = 0.05):
    """Poll ``predicate`` until it returns something true (Redis errors count as not yet)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {seconds} s")
        time.sleep(step)


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, formed with ``redis-cli --cluster``."""

    def __init__(self, binary: str, base: Path, masters: int = 3, replicas: int = 0,
                 node_timeout_ms: int = 1000, appendonly: bool = False):
        self.binary, self.base = binary, Path(base)
        self.node_timeout_ms, self.appendonly = node_timeout_ms, appendonly
        taken: set[int] = set()
        self.ports = [free_cluster_port(taken) for _ in range(masters * (1 + replicas))]
        self.replicas = replicas
        self.processes: dict[int, subprocess.Popen] = {}

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> "LocalCluster":
        cli = shutil.which("redis-cli")
        if cli is None:
            raise FileNotFoundError("redis-cli")
        for port in self.ports:
            (self.base / str(port)).mkdir(parents=True)
            self.start_node(port)
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                        "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        self.wait_ok()
        # A replica that never finished its first sync cannot be promoted.
        wait_for(lambda: all(self.client(p).info("replication").get("master_link_status") == "up"
                             for p in self.ports if self.role(p) == "slave"),
                 "every replica to finish its first sync", 30)
        return self

    def start_node(self, port: int) -> None:
        """Start (or restart) the node on ``port`` in its own directory."""
        directory = self.base / str(port)
        args = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout",
                str(self.node_timeout_ms), "--repl-diskless-sync-delay", "0",
                "--save", "", "--dir", str(directory),
                "--logfile", str(directory / "redis.log")]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        self.processes[port] = subprocess.Popen(args, cwd=directory, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
        wait_for(lambda: self.client(port).ping(), f"node {port} to answer PING", 10)

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port``."""
        process = self.processes.pop(port)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def close(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()

    # -- reading the cluster --------------------------------------------------------------
    @staticmethod
    def client(port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2,
                           decode_responses=True, protocol=2)

    def url(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def live_ports(self) -> list[int]:
        return [p for p in self.ports if p in self.processes]

    def state(self, port: int) -> str:
        return self.client(port).cluster("info")["cluster_state"]

    def wait_ok(self, seconds: float = 30.0) -> None:
        """Until every running node says the cluster is ok."""
        wait_for(lambda: all(self.state(p) == "ok" for p in self.live_ports()),
                 "every node to say cluster_state:ok", seconds)

    def wait_fail(self, port: int, seconds: float = 30.0) -> None:
        """Until the node on ``port`` says the cluster is down."""
        wait_for(lambda: self.state(port) == "fail", f"node {port} to say cluster_state:fail", seconds)

    def master_of_slot(self, slot: int, ask: int | None = None) -> int:
        """The port of the master serving ``slot``, as a live node sees it."""
        port = ask or self.live_ports()[0]
        for start, end, master, *_ in self.client(port).execute_command("CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return int(master[1])
        raise AssertionError(f"slot {slot} is not served")

    def masters(self) -> list[int]:
        return sorted({self.master_of_slot(s) for s in (0, 6000, 12000)})

    def role(self, port: int) -> str:
        return self.client(port).execute_command("ROLE")[0]

    def namespace_on(self, master: int, prefix: str) -> str:
        """A fresh namespace whose slot the master on ``master`` serves."""
        for _ in range(10_000):
            namespace = f"{prefix}{random.randrange(16 ** 8):08x}"
            if self.master_of_slot(namespace_slot(namespace)) == master:
                return namespace
        raise AssertionError(f"no namespace found on master {master}")
