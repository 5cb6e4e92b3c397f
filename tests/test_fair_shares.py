"""Fair shares (engine/scripts/lib.lua, claim.lua): within a priority, groups take turns,
so a big batch queued first does not hold up a single query submitted after it."""
from __future__ import annotations

from engine import Task, TaskType
from tests.support.steps import claim


def claimed_groups(queue, rounds):
    """The fair-share group of each task claimed one at a time, in order."""
    out = []
    for _ in range(rounds):
        for task_id, _ in claim(queue):
            out.append(queue.client.hget(queue.keys.task(task_id), "group"))
    return out


def test_a_single_query_starts_within_two_claims_of_a_10000_task_batch_ahead(queue):
    batch_id = queue.submit_task(Task(task_type=TaskType.BATCH_QUERY,
                                      payload={"queries": [f"q{i}" for i in range(10_000)]}))
    single = queue.submit_task(Task(task_type="agent_query", payload={"query": "mine"}))
    first = [task_id for _ in range(3) for task_id, _ in claim(queue)]
    assert single in first[:2]
    assert queue.get_task(first[0])["parent_id"] == batch_id


def test_sessions_take_turns_within_a_priority(queue):
    for i in range(6):
        queue.submit_task(Task(task_type="t", payload={"i": i}, session_id="alice"))
    for i in range(2):
        queue.submit_task(Task(task_type="t", payload={"i": i}, session_id="bob"))
    queue.submit_task(Task(task_type="t", payload={}, group="carol"))
    assert claimed_groups(queue, 9) == ["alice", "bob", "carol", "alice", "bob",
                                        "alice", "alice", "alice", "alice"]


def test_alone_in_line_a_group_is_claimed_in_bulk_and_in_order(queue):
    ids = [queue.submit_task(Task(task_type="t", payload={"i": i}, session_id="s"))
           for i in range(50)]
    flat = queue.store.claim("worker-a", 50)
    assert [flat[i] for i in range(0, len(flat), 13)] == ids


def test_depth_counts_grouped_tasks_and_not_group_markers(queue):
    for i in range(5):
        queue.submit_task(Task(task_type="t", payload={"i": i}, session_id="s1"))
    lone = queue.submit_task(Task(task_type="t", payload={}))
    grouped = queue.submit_task(Task(task_type="t", payload={}, group="g", priority="high"))
    stats = queue.get_queue_stats()
    assert stats.depth_by_priority == {"urgent": 0, "high": 1, "normal": 6, "low": 0}
    assert stats.pending_tasks == 7
    queue.cancel_task(grouped)
    queue.cancel_task(lone)
    assert queue.get_queue_stats().depth_by_priority == {"urgent": 0, "high": 0, "normal": 5,
                                                         "low": 0}
    claimed = [task_id for _ in range(10) for task_id, _ in claim(queue)]
    assert len(claimed) == 5 and grouped not in claimed and lone not in claimed
    assert queue.get_queue_stats().depth_by_priority == {"urgent": 0, "high": 0, "normal": 0,
                                                         "low": 0}


def test_a_grouped_task_put_back_in_line_is_claimed_again(queue, make_worker):
    task_id = queue.submit_task(Task(task_type="t", payload={}, session_id="s"))
    [(claimed, token)] = claim(queue)
    assert queue.store.release([(claimed, token)]) == 1          # a stopping worker
    [(again, token)] = claim(queue)
    assert again == task_id
    queue.requeue_task(task_id)                                   # an operator
    [(again, _)] = claim(queue)
    assert again == task_id


def test_aging_lifts_a_waiting_task_one_level_at_a_time(redis_url, namespace, fixed_clock):
    from engine import Settings, TaskQueue
    from engine.connection import connect
    settings = Settings.from_mapping({}, aging=60.0)
    queue = TaskQueue(connect(redis_url), settings=settings, namespace=namespace, clock=fixed_clock)
    low = queue.submit_task(Task(task_type="t", payload={}, priority="low"))
    grouped = queue.submit_task(Task(task_type="t", payload={}, priority="low", session_id="s"))
    seen = []
    for _ in range(4):
        fixed_clock.advance(30)
        queue.promote_due()
        fixed_clock.advance(31)
        queue.promote_due()
        seen.append((queue.get_task(low)["priority"], queue.get_task(grouped)["priority"]))
    assert seen == [("normal", "normal"), ("high", "high"), ("urgent", "urgent"),
                    ("urgent", "urgent")]
    assert queue.get_queue_stats().depth_by_priority == {"urgent": 2, "high": 0, "normal": 0,
                                                         "low": 0}
    urgent = queue.submit_task(Task(task_type="t", payload={}, priority="urgent"))
    order = [task_id for _ in range(3) for task_id, _ in claim(queue)]
    assert set(order[:2]) == {low, grouped} and order[2] == urgent   # lifted ones waited longer


def test_without_aging_a_low_task_stays_low(queue, fixed_clock):
    low = queue.submit_task(Task(task_type="t", payload={}, priority="low"))
    queue.promote_due()
    assert queue.get_task(low)["priority"] == "low"
