"""With no Redis configured the console starts its own, and a worker, and says so."""
from __future__ import annotations

import time

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from console import runtime
from console.testing import APP, PAGE_FILES, button, texts


@pytest.fixture
def nothing_configured(monkeypatch, tmp_path, redis_server_bin):
    for name in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "CONSOLE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QUEUE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QUEUE_NAMESPACE", "embedded_test")
    monkeypatch.setenv("AGENT_DEMO_LATENCY", "0")
    yield tmp_path / "data"
    runtime.stop_embedded()                 # stops the worker, then the private server
    st.cache_resource.clear()


def test_embedded_redis_and_worker_run_a_query_end_to_end(nothing_configured):
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    sidebar = texts(at.sidebar)
    assert "Running embedded" in sidebar and "Nothing is shared with other machines" in sidebar
    # The demo agent's knobs, to make failures and retries on purpose.
    assert "AGENT_DEMO_FAILURE_RATE" in sidebar and "QUEUE_RETRY_DELAY" in sidebar
    ctx = runtime.connect_console()         # the same cached objects the page used
    assert ctx.connection.embedded and ctx.connection.mode == "redis-server"
    assert ":6379" not in ctx.connection.url
    assert (nothing_configured / "redis").is_dir()
    assert ctx.worker is not None and ctx.worker.alive

    at.switch_page(PAGE_FILES["Submit"]).run()
    at.text_area(key="submit_single_query").input("hello embedded")
    button(at, "Submit query").click().run()
    task_id = at.session_state["submit_single_watched"][0]
    deadline = time.monotonic() + 20
    while (ctx.queue.get_task_status(task_id) or {}).get("status") != "completed":
        assert time.monotonic() < deadline, ctx.queue.get_task_status(task_id)
        time.sleep(0.05)
    at.switch_page(PAGE_FILES["Workers"]).run()
    workers = at.get_by_key("workers_table").dataframe[0].value
    assert workers["Name"].tolist() == ["console-embedded"]
    assert workers["Concurrency"].tolist() == [4]
