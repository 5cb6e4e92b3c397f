"""Roles checked by the engine (engine.access): a viewer's forged request is refused by
the engine call itself, and every state-changing call, done or refused, is audited."""
from __future__ import annotations

import csv
import io

import pytest

from engine import Settings, Task, TaskScheduler
from engine.access import Identity, Role, acting_as, audit_csv, read_audit, role_for
from engine.errors import AccessDenied

VIEWER = Identity("vera@example.com", Role.VIEWER)
OPERATOR = Identity("otto@example.com", Role.OPERATOR)
ADMIN = Identity("ada@example.com", Role.ADMIN)


@pytest.mark.parametrize(("email", "groups", "role"), [
    ("ada@example.com", [], Role.ADMIN), ("ADA@Example.com", [], Role.ADMIN),
    ("otto@example.com", ["ops"], Role.ADMIN),                  # the group names an admin
    ("otto@example.com", [], Role.OPERATOR), ("someone@example.com", [], Role.VIEWER),
    ("someone@elsewhere.org", [], None), (None, ["sre"], Role.OPERATOR),
])
def test_roles_come_from_emails_domains_and_groups(email, groups, role):
    settings = Settings.from_mapping({"CONSOLE_ADMINS": "ada@example.com, group:ops",
                                      "CONSOLE_OPERATORS": "otto@example.com,group:sre",
                                      "CONSOLE_VIEWERS": "*@example.com"})
    assert role_for(settings, email, groups) == role


def test_a_viewer_reads_but_every_verb_is_refused_and_audited(queue):
    task_id = queue.submit_task(Task(task_type="echo"))
    as_viewer = acting_as(queue, VIEWER)
    assert as_viewer.get_task_status(task_id)["status"] == "pending"
    assert as_viewer.get_queue_stats().pending_tasks == 1
    for verb in (lambda: as_viewer.cancel_task(task_id), lambda: as_viewer.retry_task(task_id),
                 lambda: as_viewer.submit_task(Task(task_type="echo")),
                 lambda: as_viewer.delete_tasks([task_id]), lambda: as_viewer.purge("failed"),
                 lambda: as_viewer.store.cancel(task_id, "{}")):
        with pytest.raises(AccessDenied, match="vera@example.com \\(viewer\\) may not"):
            verb()
    assert queue.get_task_status(task_id)["status"] == "pending"       # nothing changed
    entries = read_audit(queue)
    assert [e["action"] for e in entries] == ["cancel", "purge", "delete_tasks", "submit_task",
                                              "retry_task", "cancel_task"]
    assert {e["outcome"] for e in entries} == {"denied"}
    assert entries[-1]["tasks"] == [task_id] and entries[-1]["who"] == "vera@example.com"


def test_an_operator_submits_cancels_and_retries_but_may_not_purge(queue):
    as_operator = acting_as(queue, OPERATOR)
    ids = as_operator.submit_tasks([Task(task_type="echo") for _ in range(3)])
    as_operator.cancel_task(ids[0])
    as_operator.retry_task(ids[0])
    with pytest.raises(AccessDenied):
        as_operator.purge("cancelled")
    with pytest.raises(AccessDenied):
        TaskScheduler(queue=as_operator).add_schedule("nightly", cron="0 3 * * *",
                                                      task=Task(task_type="echo"))
    entries = read_audit(queue)
    assert [(e["action"], e["outcome"]) for e in entries] == [
        ("add_schedule", "denied"), ("purge", "denied"), ("retry_task", "ok"),
        ("cancel_task", "ok"), ("submit_tasks", "ok")]
    assert entries[-1]["tasks"] == ids and entries[-1]["count"] == 3
    assert all(e["role"] == "operator" for e in entries)


def test_an_admin_purges_and_manages_schedules_and_the_audit_exports(queue):
    as_admin = acting_as(queue, ADMIN)
    task_id = as_admin.submit_task(Task(task_type="echo"))
    as_admin.cancel_task(task_id)
    assert as_admin.purge("cancelled") == 1
    TaskScheduler(queue=as_admin).add_schedule("nightly", cron="0 3 * * *", task=Task(task_type="echo"))
    rows = list(csv.DictReader(io.StringIO(audit_csv(read_audit(queue)))))
    assert [(r["action"], r["outcome"]) for r in rows] == [
        ("add_schedule", "ok"), ("purge", "ok"), ("cancel_task", "ok"), ("submit_task", "ok")]
    assert rows[1]["detail"] == "cancelled: 1 deleted" and rows[1]["tasks"] == ""
    assert rows[3]["tasks"] == task_id
    assert all(r["who"] == "ada@example.com" and r["at"] for r in rows)


def test_a_failing_verb_is_audited_as_an_error(queue):
    from engine import TaskNotFound
    with pytest.raises(TaskNotFound):
        acting_as(queue, OPERATOR).cancel_task("f" * 32)
    [entry] = read_audit(queue)
    assert (entry["action"], entry["outcome"], entry["detail"]) == ("cancel_task", "error", "TaskNotFound")


def test_a_batch_submitted_through_the_guard_is_audited_with_its_tasks(queue):
    from engine.batch import submit_csv
    batch_id = submit_csv(b"query\nfirst\nsecond\n", query_column="query", queue=acting_as(queue, OPERATOR))
    entries = read_audit(queue)
    assert entries and all(e["outcome"] == "ok" and e["who"] == OPERATOR.name for e in entries)
    audited = {task_id for e in entries for task_id in e["tasks"]}
    assert batch_id in audited and len(audited) >= 3          # the batch and its two queries
    with pytest.raises(AccessDenied):
        submit_csv(b"query\nx\n", query_column="query", queue=acting_as(queue, VIEWER))


def test_the_queue_offers_the_facade_as_a_method(queue):
    task_id = queue.submit_task(Task(task_type="echo"))
    with pytest.raises(AccessDenied):
        queue.acting_as(VIEWER).cancel_task(task_id)
    queue.acting_as(OPERATOR).cancel_task(task_id)
    assert queue.get_task_status(task_id)["status"] == "cancelled"
    assert queue.acting_as(OPERATOR).acting_as(VIEWER).identity == VIEWER     # down: allowed
    with pytest.raises(AccessDenied, match="cannot take the admin role"):
        queue.acting_as(VIEWER).acting_as(ADMIN)                              # up: refused
