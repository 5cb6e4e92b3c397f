"""One helper that checks every index the engine keeps for a task against the task hash.

The promise under test (docs/ARCHITECTURE.md, "Redis layout"): a task's status lives in its hash, and
exactly one ``status:<s>`` sorted set — the one named by that status — holds its id. The
priority lists, ``routed``, ``leases`` and ``scheduled`` must agree with the status too: a
pending task is in its priority list once, or set aside in ``routed`` once, not both.
"""
from __future__ import annotations

import re

import redis

from engine.keys import PRIORITY_NAMES, STATUS_NAMES, Keys

_PRIORITY_LABEL = {"15": "urgent", "10": "high", "5": "normal", "0": "low"}


def namespace_keys(client: redis.Redis, namespace: str) -> list[str]:
    """Every key of ``namespace`` (``{namespace}:*``), sorted."""
    pattern = re.sub(r"([\\*?\[\]{}^])", r"\\\1", "{%s}:" % namespace) + "*"
    return sorted(client.scan_iter(match=pattern, count=1000))


def index_state(client: redis.Redis, keys: Keys, task_id: str) -> dict:
    """Where ``task_id`` appears: hash status, status indexes, queue lists, leases, scheduled."""
    pipe = client.pipeline(transaction=False)
    pipe.hmget(keys.task(task_id), "status", "priority", "total")
    for name in STATUS_NAMES:
        pipe.zscore(keys.status[name], task_id)
    for name in PRIORITY_NAMES:
        pipe.lpos(keys.queue(name), task_id, count=0)
    pipe.zscore(keys.leases, task_id)
    pipe.zscore(keys.scheduled, task_id)
    pipe.lpos(keys.routed, task_id, count=0)
    replies = pipe.execute()
    (status, priority, total), rest = replies[0], replies[1:]
    statuses = [name for name, score in zip(STATUS_NAMES, rest[:7]) if score is not None]
    queued = {name: len(pos) for name, pos in zip(PRIORITY_NAMES, rest[7:11]) if pos}
    return {"status": status, "priority": priority, "batch": total is not None,
            "indexes": statuses, "queued": queued,
            "leased": rest[11] is not None, "scheduled": rest[12] is not None,
            "routed": len(rest[13])}


def assert_consistent(client: redis.Redis, keys: Keys, task_id: str,
                      expected: str | None = None) -> dict:
    """Assert the task's indexes agree with its hash (and, when given, that its status is
    ``expected``; ``expected="gone"`` means deleted without a trace). Returns the state."""
    state = index_state(client, keys, task_id)
    status = state["status"]
    if expected == "gone":
        assert state == {"status": None, "priority": None, "batch": False, "indexes": [],
                         "queued": {}, "leased": False, "scheduled": False, "routed": 0}, state
        assert client.exists(keys.result(task_id)) == 0
        return state
    assert status is not None, f"task {task_id} has no hash: {state}"
    if expected is not None:
        assert status == expected, state
    assert state["indexes"] == [status], f"status {status!r} but indexed in {state['indexes']}"
    want_queue = {_PRIORITY_LABEL[state["priority"]]: 1} if status == "pending" else {}
    if status == "pending" and state["routed"]:     # set aside for a worker of its type
        want_queue = {}
    assert state["queued"] == want_queue, f"{status} task queued as {state['queued']}"
    assert state["routed"] == (1 if status == "pending" and not state["queued"] else 0), state
    assert state["leased"] == (status == "running" and not state["batch"]), state
    assert state["scheduled"] == (status in ("scheduled", "retry")), state
    has_result = client.exists(keys.result(task_id)) == 1
    assert has_result == (status in ("completed", "failed", "cancelled")), state
    return state
