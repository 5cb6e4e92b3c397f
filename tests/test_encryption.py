"""Encryption at rest (engine/crypto.py): with QUEUE_ENCRYPTION_KEYS set, what Redis holds
reads as nothing (checked by reading every key of the namespace directly), the engine
reads it back for whoever has a key, rotation keeps old data readable, and a process
without the key says "encrypted" and never shows ciphertext as data."""
from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from engine import ConfigurationError, Settings, Task, TaskQueue, TaskType, TaskWorker
from engine import crypto
from engine.connection import connect

SECRET = "the launch code is 0451"
KEY1, KEY2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()


@pytest.fixture(autouse=True)
def fresh_keyring(monkeypatch):
    """Each test starts as a process that has seen no key."""
    monkeypatch.setattr(crypto, "_known_keys", [])
    monkeypatch.setattr(crypto, "_reader", None)
    crypto._sealer.cache_clear()
    yield
    crypto._sealer.cache_clear()


def make_queue(redis_url: str, namespace: str, keys: str | None) -> TaskQueue:
    settings = Settings.from_mapping({"QUEUE_ENCRYPTION_KEYS": keys} if keys else {},
                                     heartbeat_interval=0.2, lease_timeout=1.0)
    return TaskQueue(connect(redis_url), settings=settings, namespace=namespace)


def everything_stored(client, namespace: str) -> str:
    """Every value of every key of the namespace, read with plain Redis commands."""
    out = []
    for key in client.scan_iter(match="{%s}:*" % namespace):
        kind = client.type(key)
        if kind == "hash":
            out.append(str(client.hgetall(key)))
        elif kind == "string":
            out.append(client.get(key))
        elif kind == "list":
            out.append(str(client.lrange(key, 0, -1)))
        elif kind == "zset":
            out.append(str(client.zrange(key, 0, -1)))
        elif kind == "stream":
            out.append(str(client.xrange(key)))
    return "\n".join(out)


def test_redis_holds_no_plaintext_and_the_engine_reads_it_back(redis_url, namespace, redis_client):
    queue = make_queue(redis_url, namespace, KEY1)
    one = queue.submit_task(Task(task_type="echo", payload={"query": SECRET}))
    many = queue.submit_tasks([Task(task_type="echo", payload={"query": SECRET, "i": i}) for i in range(3)])
    batch_id = queue.submit_task(Task(task_type=TaskType.BATCH_QUERY, payload={"queries": [SECRET, "b"]}))
    worker = TaskWorker(queue, handlers={"echo": lambda t: {"said": t.payload["query"]},
                                         TaskType.AGENT_QUERY: lambda t: {"answer": t.payload["query"].upper()}})
    worker.start(burst=True)
    stored = everything_stored(redis_client, namespace)
    assert stored and SECRET not in stored and SECRET.upper() not in stored
    assert crypto.PREFIX in stored
    assert queue.get_task(one)["payload"] == {"query": SECRET}
    assert queue.get_task_result(one)["result"] == {"said": SECRET}
    assert queue.wait_for_result(many[2], timeout=5)["result"] == {"said": SECRET}
    assert queue.get_task_result(batch_id)["result"]["answers"][0] == SECRET.upper()


def test_rotation_reads_old_data_with_the_old_key_listed_second(redis_url, namespace):
    old = make_queue(redis_url, namespace, KEY1)
    before = old.submit_task(Task(task_type="echo", payload={"query": SECRET}))
    rotated = make_queue(redis_url, namespace, f"{KEY2},{KEY1}")
    TaskWorker(rotated, handlers={"echo": lambda t: t.payload["query"]}).start(burst=True)
    assert rotated.get_task_result(before)["result"] == SECRET
    after = rotated.submit_task(Task(task_type="echo", payload={"query": "new"}))
    crypto._sealer.cache_clear()
    crypto._known_keys.clear()
    crypto._reader = None
    old_only = make_queue(redis_url, namespace, KEY1)       # a process still on the old key
    assert old_only.get_task(after)["payload"] == crypto.ENCRYPTED_PAYLOAD
    assert old_only.get_task(before)["payload"] == {"query": SECRET}


def test_a_process_without_the_key_says_encrypted(redis_url, namespace):
    task_id = make_queue(redis_url, namespace, KEY1).submit_task(
        Task(task_type="echo", payload={"query": SECRET}))
    queue = make_queue(redis_url, namespace, KEY1)
    TaskWorker(queue, handlers={"echo": lambda t: t.payload["query"]}).start(burst=True)
    crypto._sealer.cache_clear()
    crypto._known_keys.clear()
    crypto._reader = None
    keyless = make_queue(redis_url, namespace, None)
    record = keyless.get_task(task_id)
    assert record["payload"] == crypto.ENCRYPTED_PAYLOAD and SECRET not in str(record)
    assert keyless.get_task_result(task_id)["result"] == crypto.ENCRYPTED_RESULT
    from console.data import query_preview
    assert "encrypted" in query_preview(record["payload"])


def test_a_worker_with_the_wrong_key_dead_letters_the_task_naming_why(redis_url, namespace):
    task_id = make_queue(redis_url, namespace, KEY1).submit_task(Task(task_type="echo", payload={"q": 1}))
    crypto._sealer.cache_clear()
    crypto._known_keys.clear()
    crypto._reader = None
    wrong = make_queue(redis_url, namespace, KEY2)
    ran = []
    TaskWorker(wrong, handlers={"echo": ran.append}).process_one()
    assert ran == []
    record = wrong.get_task(task_id)
    assert record["status"] == "failed" and "encrypted with a key this worker does not have" in record["error"]


def test_csv_export_decrypts_only_with_the_key(redis_url, namespace):
    from engine.batch import export_results_csv, submit_csv
    queue = make_queue(redis_url, namespace, KEY1)
    batch_id = submit_csv(f"query\n{SECRET}\nplain\n".encode(), query_column="query", queue=queue)
    TaskWorker(queue, handlers={TaskType.AGENT_QUERY: lambda t: {"answer": t.payload["query"]}}).start(burst=True)
    with_key = export_results_csv(batch_id, queue=queue)
    assert SECRET in with_key
    crypto._sealer.cache_clear()
    crypto._known_keys.clear()
    crypto._reader = None
    without = export_results_csv(batch_id, queue=make_queue(redis_url, namespace, None))
    assert SECRET not in without and crypto.PREFIX not in without and "encrypted" in without


def test_bad_keys_are_named_by_position_never_by_value():
    with pytest.raises(ConfigurationError, match="key 2 is not a Fernet key") as info:
        Settings.from_mapping({"QUEUE_ENCRYPTION_KEYS": f"{KEY1},not-a-key-{SECRET}"})
    assert SECRET not in str(info.value)
    settings = Settings.from_mapping({"QUEUE_ENCRYPTION_KEYS": KEY1})
    assert KEY1 not in repr(settings) and settings.describe()["QUEUE_ENCRYPTION_KEYS"] == "***"


def test_the_console_without_the_key_shows_encrypted_never_the_text(redis_url, namespace, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from console.testing import ROOT, table as table_of, texts
    queue = make_queue(redis_url, namespace, KEY1)
    task_id = queue.submit_task(Task(task_type="echo", payload={"query": SECRET}))
    TaskWorker(queue, handlers={"echo": lambda t: {"answer": SECRET}}).start(burst=True)
    crypto._sealer.cache_clear()
    crypto._known_keys.clear()
    crypto._reader = None
    for name in ("CONSOLE_PASSWORD", "REDIS_HOST", "QUEUE_ENCRYPTION_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("QUEUE_NAMESPACE", namespace)
    monkeypatch.setattr("console.shared.ENABLED", False)
    try:
        tasks = AppTest.from_file(str(ROOT / "pages" / "2_Tasks.py"), default_timeout=30).run()
        table = table_of(tasks, "tasks_table").to_string()
        assert "encrypted" in table and SECRET not in table and crypto.PREFIX not in table
        tasks.query_params["task"] = task_id
        detail = tasks.run()
        shown = texts(detail) + "".join(str(j.value) for j in detail.json)
        assert task_id in shown                                   # the task is open
        assert "encrypted" in shown and SECRET not in shown and crypto.PREFIX not in shown
    finally:
        st.cache_resource.clear()
