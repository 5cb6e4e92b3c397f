"""Count the instructions Redis spends per task: ``python -m bench.instructions [-n N]``.

Runs a private redis-server under valgrind's callgrind and counts the machine instructions
it executes for each phase of a task's life: submit one at a time, submit in bulk, and
claim + complete by a worker in burst mode. Unlike time (``INFO cpu``), an instruction
count does not move with what else the machine is doing, so it shows what a change to a
script costs, run after run. The server is slowed ~50x under valgrind: keep N modest.
Needs ``valgrind`` (Debian's package); nothing here is a pass/fail test.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from engine import Settings, Task, TaskQueue, TaskWorker
from engine.connection import connect
from engine.embedded import free_port, redis_server_binary


class CallgrindRedis:
    """redis-server under callgrind; :meth:`count` runs a workload and returns the
    instructions the server executed during it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="redis-callgrind-"))
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.dir}/callgrind.out",
             redis_server_binary() or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._wait_ready()

    def _wait_ready(self, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if connect(self.url).ping():
                    return
            except Exception:   # not listening yet: valgrind starts slowly
                time.sleep(0.2)
        raise RuntimeError("redis-server under valgrind did not start")

    def _control(self, flag: str) -> None:
        subprocess.run(["callgrind_control", flag, str(self.proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def count(self, workload: Callable[[], None]) -> int:
        """Instructions the server executed while ``workload`` ran."""
        self._control("-z")             # zero the counters
        workload()
        before = set(self.dir.glob("callgrind.out*"))
        self._control("-d")             # dump what was counted since
        dump = next(iter(set(self.dir.glob("callgrind.out*")) - before))
        for line in dump.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
        raise RuntimeError(f"no totals in {dump}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def noop_tasks(n: int) -> list[Task]:
    return [Task(task_type="noop", payload={"i": i}) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=1000, help="tasks per phase")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    n, server = args.n, CallgrindRedis()
    try:
        queue = TaskQueue(connect(server.url), settings=Settings.from_mapping({}), namespace="instr")
        queue.submit_tasks(noop_tasks(100))           # load the scripts, warm the keyspace
        TaskWorker(queue, handlers={"noop": lambda t: None}).start(burst=True)

        def one_at_a_time() -> None:
            for task in noop_tasks(n):
                queue.submit_task(task)

        single = server.count(one_at_a_time) / n
        bulk = server.count(lambda: queue.submit_tasks(noop_tasks(n))) / n
        worker = TaskWorker(queue, handlers={"noop": lambda t: None})
        drain = server.count(lambda: worker.start(burst=True)) / (2 * n)
        print(f"# Redis instructions per task (callgrind), {n:,} tasks a phase")
        print(f"submit, one call at a time  : {single:>9,.0f}")
        print(f"submit, submit_tasks bulk   : {bulk:>9,.0f}")
        print(f"worker: claim, complete, etc: {drain:>9,.0f}")
        print(f"a bulk-submitted task's life: {bulk + drain:>9,.0f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
