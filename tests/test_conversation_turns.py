"""Conversations run one task at a time, in submit order (claim.lua: a session's turn),
across workers; every other task, and bulk work sharing a session id, is unaffected."""
from __future__ import annotations

import json

from engine import Task, TaskType
from tests.support.processes import WorkerProcess, worker_env
from tests.support.steps import claim, wait_until
from tests.support.turn_handlers import LOG_SUFFIX


def turn_task(session, i, conversation=True):
    payload = {"i": i, **({"conversation": True} if conversation else {})}
    return Task(task_type="turn", payload=payload, session_id=session)


def complete(queue, task_id, token):
    assert queue.store.complete([(task_id, token, "{}", 1)]) == [1]


def test_a_conversation_runs_one_task_at_a_time_in_submit_order(queue):
    a = [queue.submit_task(turn_task("alice", i)) for i in range(3)]
    b = queue.submit_task(turn_task("bob", 0))
    loose = queue.submit_task(turn_task("alice", 9, conversation=False))
    first = dict(claim(queue, count=10))
    assert set(first) == {a[0], b, loose}          # alice's next two wait their turn
    assert queue.get_task_status(a[1])["status"] == "pending"
    assert claim(queue, count=10) == []
    complete(queue, a[0], first[a[0]])
    second = dict(claim(queue, count=10))
    assert list(second) == [a[1]]
    complete(queue, a[1], second[a[1]])
    assert [t for t, _ in claim(queue, count=10)] == [a[2]]


def test_a_cancelled_waiting_task_is_passed_over(queue):
    ids = [queue.submit_task(turn_task("s", i)) for i in range(3)]
    [(first, token)] = claim(queue, count=10)
    queue.cancel_task(ids[1])
    complete(queue, first, token)
    assert [t for t, _ in claim(queue, count=10)] == [ids[2]]


def test_a_failed_attempt_keeps_the_turn_until_the_task_is_done(queue):
    ids = [queue.submit_task(Task(task_type="turn", payload={"i": i, "conversation": True},
                                  session_id="s", retry_delay=0)) for i in range(2)]
    [(first, token)] = claim(queue, count=10)
    assert queue.store.fail([(first, token, "boom", "", 0, "{}")]) == [2]   # to retry
    queue.promote_due()
    assert [t for t, _ in claim(queue, count=10)] == [ids[0]]              # not ids[1]


def test_bulk_work_sharing_a_session_is_never_serialised(queue):
    batch = queue.submit_task(Task(task_type=TaskType.BATCH_QUERY, session_id="user-1",
                                   payload={"queries": [f"q{i}" for i in range(20)]}))
    assert batch
    assert len(claim(queue, count=50)) == 20


def test_two_worker_processes_keep_each_conversation_in_order(queue, redis_url, namespace):
    ids = []
    for i in range(5):
        for session in ("alice", "bob"):
            ids.append(queue.submit_task(turn_task(session, i)))
    env = worker_env(redis_url, namespace)
    workers = [WorkerProcess(env, "--handlers", "tests.support.turn_handlers",
                             "--concurrency", "4") for _ in range(2)]
    try:
        wait_until(lambda: all(queue.get_task_status(t)["status"] == "completed" for t in ids),
                   timeout=30, what="every turn to complete")
    finally:
        for worker in workers:
            worker.close()
    log = [json.loads(x) for x in queue.client.lrange(queue.keys.prefix + LOG_SUFFIX, 0, -1)]
    for session in ("alice", "bob"):
        edges = [e for e in log if e["session"] == session]
        assert [e["i"] for e in edges] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]      # in order
        assert [e["edge"] for e in edges] == ["start", "end"] * 5               # never overlapping
    starts = sorted(e["at"] for e in log if e["edge"] == "start")
    ends = sorted(e["at"] for e in log if e["edge"] == "end")
    assert starts[1] < ends[0]                      # the two sessions ran side by side


def test_every_waiting_conversation_is_looked_at_in_turn(queue):
    """More conversations wait than one claim looks at (20): each still gets its turn."""
    sessions = [f"user-{i:02d}" for i in range(30)]
    seconds = {}
    for session in sessions:
        queue.submit_task(turn_task(session, 0))
        seconds[session] = queue.submit_task(turn_task(session, 1))
    first = claim(queue, count=100)
    assert len(first) == 30                     # one a session; 30 wait their turn
    last_session = queue.get_task(first[-1][0])["session_id"]
    for task_id, token in first:
        if queue.get_task(task_id)["session_id"] == last_session:
            complete(queue, task_id, token)
    got = []
    for _ in range(3):                          # 20 sessions looked at a claim, busy ones to the back
        got += [t for t, _ in claim(queue, count=100)]
    assert got == [seconds[last_session]]


def test_a_damaged_turn_record_lets_the_task_run(queue):
    queue.client.set(queue.keys.serial_prefix + "s:waiting", "not a list")
    queue.client.hset(queue.keys.serial_prefix + "s", "not", "a string")
    ids = [queue.submit_task(turn_task("s", i)) for i in range(2)]
    claimed = [t for t, _ in claim(queue, count=10)]
    assert ids[0] in claimed
    assert queue.get_queue_stats().pending_tasks == 2 - len(claimed)
