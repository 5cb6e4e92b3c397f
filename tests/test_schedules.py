"""Recurring schedules: cron + timezone, stored in Redis, each tick fired exactly once.

Every test runs on the injected clock (``clocked_queue`` + ``fixed_clock``): time moves by
assignment, never by sleeping.
"""
from __future__ import annotations

import threading
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from engine import AgentTask, Settings, Task, TaskQueue, TaskScheduler, TaskType, ValidationError
from engine.connection import connect
from engine.errors import ScheduleNotFound
from engine.scheduler import next_tick_ms, validate_cron
from tests.fixtures_engine import TEST_SETTINGS

PARIS = ZoneInfo("Europe/Paris")


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def at(clock, *args, tz=timezone.utc) -> int:
    """Move the clock to a wall-clock time (default UTC); returns the new now in ms."""
    clock.ms = ms(datetime(*args, tzinfo=tz))
    return clock.ms


def tasks_of(queue: TaskQueue, name: str) -> list[dict]:
    """Every task the schedule ``name`` submitted, oldest first."""
    records = queue.list_tasks(limit=1000)
    mine = [r for r in records if (r.get("payload") or {}).get("schedule", {}).get("name") == name]
    return sorted(mine, key=lambda r: r["created_at"])


@pytest.fixture
def scheduler(clocked_queue: TaskQueue) -> TaskScheduler:
    return TaskScheduler(clocked_queue)


def report_task() -> Task:
    return AgentTask(payload={"query": "Generate daily analytics report"})


# -- defining ---------------------------------------------------------------------------------
def test_the_guides_daily_report_is_one_line(scheduler, clocked_queue, fixed_clock):
    at(fixed_clock, 2027, 1, 15, 7, 30)
    scheduler.add_schedule("daily-report", cron="0 9 * * *",
                           task=AgentTask(payload={"query": "Generate daily analytics report"}))
    [record] = scheduler.list_schedules()
    assert record["name"] == "daily-report" and record["timezone"] == "UTC"
    assert record["next_run"] == "2027-01-15T09:00:00.000+00:00"
    assert record["paused"] is False and record["fires"] == 0
    assert record["task"]["payload"] == {"query": "Generate daily analytics report"}
    assert record["task"]["task_type"] == "agent_query"


def test_next_run_is_read_in_the_schedules_timezone(scheduler, fixed_clock):
    at(fixed_clock, 2027, 1, 15, 12, 0)                       # winter: Paris is UTC+1
    winter = scheduler.add_schedule("paris", "0 9 * * *", report_task(), timezone="Europe/Paris")
    assert winter["next_run"] == "2027-01-16T08:00:00.000+00:00"
    assert winter["next_run_local"] == "2027-01-16T09:00:00+01:00"
    at(fixed_clock, 2027, 7, 1, 12, 0)                        # summer: UTC+2
    summer = scheduler.add_schedule("paris-summer", "0 9 * * *", report_task(), timezone="Europe/Paris")
    assert summer["next_run"] == "2027-07-02T07:00:00.000+00:00"


def test_default_timezone_comes_from_settings(redis_url, namespace, fixed_clock):
    settings = Settings.from_mapping({"QUEUE_SCHEDULE_TIMEZONE": "America/New_York"}, **TEST_SETTINGS)
    queue = TaskQueue(connect(redis_url), settings=settings, namespace=namespace, clock=fixed_clock)
    at(fixed_clock, 2027, 1, 15, 12, 0)
    record = TaskScheduler(queue).add_schedule("ny", "0 9 * * *", report_task())
    assert record["timezone"] == "America/New_York"
    assert record["next_run"] == "2027-01-15T14:00:00.000+00:00"    # 12:00 UTC is 07:00 there


@pytest.mark.parametrize("cron", ["61 9 * * *", "0 9 * *", "0 9 * * * *", "every day", "", None])
def test_a_bad_cron_is_rejected_and_nothing_is_written(scheduler, clocked_queue, cron):
    with pytest.raises(ValidationError, match="cron"):
        scheduler.add_schedule("bad", cron, report_task())
    assert clocked_queue.client.keys("{%s}:*" % clocked_queue.namespace) == []


@pytest.mark.parametrize("kwargs, match", [
    (dict(timezone="Mars/Olympus_Mons"), "unknown timezone"),
    (dict(timezone="Europe/Pariss"), "unknown timezone"),
    (dict(misfire="always"), "misfire"),
])
def test_bad_timezone_or_misfire_is_rejected(scheduler, clocked_queue, kwargs, match):
    with pytest.raises(ValidationError, match=match):
        scheduler.add_schedule("bad", "0 9 * * *", report_task(), **kwargs)
    assert clocked_queue.client.keys("{%s}:*" % clocked_queue.namespace) == []


@pytest.mark.parametrize("name, task, match", [
    ("", report_task(), "schedule name"),
    ("-dash-first", report_task(), "schedule name"),
    ("ok", {"query": "not a Task"}, "must be a Task"),
    ("ok", AgentTask(payload={"query": "q"}, delay=5), "run_at and delay"),
    ("ok", AgentTask(payload={"query": "q"}, idempotency_key="k"), "idempotency key"),
    ("ok", Task(task_type=TaskType.BATCH_QUERY, payload={"queries": []}), "queries"),
    ("ok", AgentTask(payload={"query": "x" * 2_000_000}), "limit"),
])
def test_bad_names_and_templates_are_rejected(scheduler, clocked_queue, name, task, match):
    with pytest.raises(ValidationError, match=match):
        scheduler.add_schedule(name, "0 9 * * *", task)
    assert clocked_queue.client.keys("{%s}:*" % clocked_queue.namespace) == []


def test_cron_macros_are_accepted():
    assert validate_cron("@daily") == "0 0 * * *"
    assert validate_cron("@hourly") == "0 * * * *"


def test_adding_the_same_definition_again_keeps_the_next_run(scheduler, fixed_clock):
    at(fixed_clock, 2027, 1, 15, 7, 0)
    first = scheduler.add_schedule("r", "0 9 * * *", report_task())
    at(fixed_clock, 2027, 1, 15, 8, 59)                      # e.g. the application restarts
    again = scheduler.add_schedule("r", "0 9 * * *", report_task())
    assert again["next_run"] == first["next_run"] == "2027-01-15T09:00:00.000+00:00"
    changed = scheduler.add_schedule("r", "30 9 * * *", report_task())
    assert changed["next_run"] == "2027-01-15T09:30:00.000+00:00"
    assert len(scheduler.list_schedules()) == 1


# -- firing -----------------------------------------------------------------------------------
def test_each_tick_fires_once(scheduler, clocked_queue, fixed_clock):
    at(fixed_clock, 2027, 1, 15, 8, 0)
    scheduler.add_schedule("daily", "0 9 * * *", report_task())
    assert scheduler.fire_due_schedules() == []               # not yet
    at(fixed_clock, 2027, 1, 15, 9, 0, 0)
    [task_id] = scheduler.fire_due_schedules()
    assert scheduler.fire_due_schedules() == [] and scheduler.run_pending() == 0
    task = clocked_queue.get_task(task_id)
    assert task["status"] == "pending" and task["task_type"] == "agent_query"
    assert task["payload"] == {"query": "Generate daily analytics report",
                               "schedule": {"name": "daily", "tick": "2027-01-15T09:00:00.000+00:00"}}
    record = scheduler.get_schedule("daily")
    assert record["fires"] == 1 and record["last_task_id"] == task_id
    assert record["next_run"] == "2027-01-16T09:00:00.000+00:00"
    at(fixed_clock, 2027, 1, 16, 9, 0, 1)
    assert len(scheduler.fire_due_schedules()) == 1
    assert len(tasks_of(clocked_queue, "daily")) == 2
    fired = [e for e in clocked_queue.read_events(count=50) if e["type"] == "schedule.fired"]
    assert [e["data"]["schedule"] for e in fired] == ["daily", "daily"]


def test_several_schedulers_racing_fire_each_tick_once(redis_url, namespace, settings, fixed_clock):
    queues = [TaskQueue(connect(redis_url), settings=settings, namespace=namespace, clock=fixed_clock)
              for _ in range(8)]
    at(fixed_clock, 2027, 1, 15, 8, 0)
    TaskScheduler(queues[0]).add_schedule("race", "*/5 * * * *", report_task())
    for tick in range(3):
        fixed_clock.advance(300)
        start = threading.Barrier(len(queues))
        fired: list[str] = []

        def race(queue: TaskQueue) -> None:
            scheduler = TaskScheduler(queue)
            start.wait()
            for _ in range(5):
                fired.extend(scheduler.fire_due_schedules())
                scheduler.run_pending()

        threads = [threading.Thread(target=race, args=(q,)) for q in queues]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(fired) == 1, f"tick {tick}: fired {len(fired)} times"
        assert len(tasks_of(queues[0], "race")) == tick + 1
    assert queues[0].get_queue_stats().submitted_tasks == 3


def test_a_restart_neither_repeats_nor_loses_a_tick(redis_url, namespace, settings, fixed_clock):
    def scheduler_process() -> TaskScheduler:   # a fresh process: new client, new objects
        return TaskScheduler(TaskQueue(connect(redis_url), settings=settings, namespace=namespace,
                                       clock=fixed_clock))
    at(fixed_clock, 2027, 1, 15, 8, 0)
    scheduler_process().add_schedule("hourly", "0 * * * *", report_task())
    at(fixed_clock, 2027, 1, 15, 9, 0, 5)
    assert len(scheduler_process().fire_due_schedules()) == 1
    restarted = scheduler_process()
    assert restarted.fire_due_schedules() == []               # same tick after the restart
    assert restarted.get_schedule("hourly")["next_run"] == "2027-01-15T10:00:00.000+00:00"
    at(fixed_clock, 2027, 1, 15, 10, 0, 1)
    assert len(scheduler_process().fire_due_schedules()) == 1
    assert len(tasks_of(restarted.queue, "hourly")) == 2


def test_a_crash_between_submit_and_advance_does_not_fire_twice(scheduler, clocked_queue, redis_url,
                                                                 fixed_clock, monkeypatch):
    at(fixed_clock, 2027, 1, 15, 8, 0)
    scheduler.add_schedule("daily", "0 9 * * *", report_task())
    at(fixed_clock, 2027, 1, 15, 9, 0, 2)

    def crash(*args, **kwargs):
        raise RuntimeError("process died here")
    monkeypatch.setattr(clocked_queue.store, "fire_schedule", crash)
    assert scheduler.fire_due_schedules() == []               # submitted, then "died"
    monkeypatch.undo()
    assert len(tasks_of(clocked_queue, "daily")) == 1
    fixed_clock.advance(30)                                   # the next pass, by anyone
    survivor = TaskScheduler(TaskQueue(connect(redis_url), settings=clocked_queue.settings,
                                       namespace=clocked_queue.namespace, clock=fixed_clock))
    [task_id] = survivor.fire_due_schedules()                 # the same task, not a second one
    assert [t["task_id"] for t in tasks_of(clocked_queue, "daily")] == [task_id]
    assert survivor.get_schedule("daily")["next_run"] == "2027-01-16T09:00:00.000+00:00"


def test_missed_ticks_fire_once_on_return(scheduler, clocked_queue, fixed_clock):
    at(fixed_clock, 2027, 1, 15, 8, 30)
    scheduler.add_schedule("hourly", "0 * * * *", report_task())
    at(fixed_clock, 2027, 1, 15, 14, 20)                      # down from 08:30 to 14:20: 6 ticks missed
    [task_id] = scheduler.fire_due_schedules()
    assert scheduler.fire_due_schedules() == []
    assert clocked_queue.get_task(task_id)["payload"]["schedule"]["tick"] == "2027-01-15T09:00:00.000+00:00"
    record = scheduler.get_schedule("hourly")
    assert record["fires"] == 1 and record["next_run"] == "2027-01-15T15:00:00.000+00:00"


def test_missed_ticks_with_skip_fire_nothing(scheduler, clocked_queue, fixed_clock):
    at(fixed_clock, 2027, 1, 15, 8, 30)
    scheduler.add_schedule("hourly", "0 * * * *", report_task(), misfire="skip")
    at(fixed_clock, 2027, 1, 15, 14, 20)
    assert scheduler.fire_due_schedules() == []
    record = scheduler.get_schedule("hourly")
    assert record["fires"] == 0 and record["skipped"] == 1
    assert "misfire=skip" in record["last_error"]
    assert record["next_run"] == "2027-01-15T15:00:00.000+00:00"
    at(fixed_clock, 2027, 1, 15, 15, 0, 20)                   # on time (within the grace): fires
    assert len(scheduler.fire_due_schedules()) == 1
    assert len(tasks_of(clocked_queue, "hourly")) == 1


def test_pause_resume_remove_and_run_now(scheduler, clocked_queue, fixed_clock):
    at(fixed_clock, 2027, 1, 15, 8, 0)
    scheduler.add_schedule("daily", "0 9 * * *", report_task())
    paused = scheduler.pause_schedule("daily")
    assert paused["paused"] is True and paused["next_run"] is None
    at(fixed_clock, 2027, 1, 17, 12, 0)                       # two ticks pass while paused
    assert scheduler.fire_due_schedules() == []
    manual = scheduler.run_schedule_now("daily")              # by hand, even while paused
    assert clocked_queue.get_task(manual)["payload"]["schedule"] == {"name": "daily", "tick": None}
    resumed = scheduler.resume_schedule("daily")
    assert resumed["paused"] is False
    assert resumed["next_run"] == "2027-01-18T09:00:00.000+00:00"   # no catch-up of paused ticks
    assert scheduler.fire_due_schedules() == []
    at(fixed_clock, 2027, 1, 18, 9, 0)
    assert len(scheduler.fire_due_schedules()) == 1
    assert scheduler.remove_schedule("daily") is True
    assert scheduler.remove_schedule("daily") is False
    assert scheduler.list_schedules() == []
    at(fixed_clock, 2027, 1, 19, 9, 0)
    assert scheduler.fire_due_schedules() == []
    assert len(tasks_of(clocked_queue, "daily")) == 2         # the manual run and one tick
    for verb in (scheduler.pause_schedule, scheduler.resume_schedule, scheduler.run_schedule_now,
                 scheduler.get_schedule):
        with pytest.raises(ScheduleNotFound, match="no schedule named 'daily'"):
            verb("daily")


def test_workers_fire_schedules_in_their_maintenance(clocked_queue, fixed_clock, make_worker):
    ran = []
    worker = make_worker(queue=clocked_queue)
    worker.register_handler(TaskType.AGENT_QUERY, lambda task: ran.append(task.payload) or "done")
    at(fixed_clock, 2027, 1, 15, 8, 0)
    TaskScheduler(clocked_queue).add_schedule("daily", "0 9 * * *", report_task())
    assert worker.process_one() is False
    at(fixed_clock, 2027, 1, 15, 9, 0, 1)
    assert worker.process_one() is True
    assert worker.process_one() is False
    assert [p["query"] for p in ran] == ["Generate daily analytics report"]


def test_a_schedule_whose_task_no_longer_fits_skips_the_tick(redis_url, namespace, clocked_queue,
                                                             fixed_clock, make_worker):
    at(fixed_clock, 2027, 1, 15, 8, 0)
    TaskScheduler(clocked_queue).add_schedule("big", "0 9 * * *",
                                              AgentTask(payload={"query": "x" * 5000}))
    small = Settings.from_mapping({"QUEUE_MAX_PAYLOAD_BYTES": "1000"}, **TEST_SETTINGS)
    strict = TaskQueue(connect(redis_url), settings=small, namespace=namespace, clock=fixed_clock)
    at(fixed_clock, 2027, 1, 15, 9, 0)
    worker = make_worker(queue=strict)
    assert worker.process_one() is False                      # no crash, nothing submitted
    record = TaskScheduler(strict).get_schedule("big")
    assert record["skipped"] == 1 and "task rejected" in record["last_error"]
    assert record["next_run"] == "2027-01-16T09:00:00.000+00:00"


def test_a_batch_can_be_scheduled(scheduler, clocked_queue, fixed_clock):
    at(fixed_clock, 2027, 1, 15, 8, 0)
    batch = Task(task_type=TaskType.BATCH_QUERY, payload={"queries": ["a", "b", "c"]})
    scheduler.add_schedule("nightly-batch", "0 2 * * *", batch)
    at(fixed_clock, 2027, 1, 16, 2, 0)
    [batch_id] = scheduler.fire_due_schedules()
    assert clocked_queue.get_task(batch_id)["status"] == "running"
    assert clocked_queue.count_tasks("pending") == 3


# -- cron arithmetic ----------------------------------------------------------------------------
def test_a_fixed_time_fires_once_when_clocks_go_back():
    # 31 October 2027: Paris goes from 03:00 CEST back to 02:00 CET; 02:30 happens twice.
    start = ms(datetime(2027, 10, 30, 12, 0, tzinfo=PARIS))
    first = next_tick_ms("30 2 * * *", "Europe/Paris", start)
    second = next_tick_ms("30 2 * * *", "Europe/Paris", first)
    assert datetime.fromtimestamp(first / 1000, PARIS).isoformat() == "2027-10-31T02:30:00+02:00"
    assert datetime.fromtimestamp(second / 1000, PARIS).isoformat() == "2027-11-01T02:30:00+01:00"
    # An every-hour job keeps its rhythm through the repeated hour.
    hourly, tick = [], ms(datetime(2027, 10, 31, 1, 30, tzinfo=PARIS))
    for _ in range(3):
        tick = next_tick_ms("0 * * * *", "Europe/Paris", tick)
        hourly.append(tick)
    assert [b - a for a, b in zip(hourly, hourly[1:])] == [3_600_000, 3_600_000]


def test_a_time_skipped_when_clocks_go_forward_fires_after_the_gap():
    # 28 March 2027: Paris jumps from 02:00 to 03:00; 02:30 does not exist that day.
    start = ms(datetime(2027, 3, 27, 12, 0, tzinfo=PARIS))
    tick = next_tick_ms("30 2 * * *", "Europe/Paris", start)
    assert datetime.fromtimestamp(tick / 1000, PARIS).isoformat() == "2027-03-28T03:00:00+02:00"
