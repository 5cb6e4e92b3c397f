"""The embeddable widgets, dropped into bare Streamlit scripts (no console frame)."""
from __future__ import annotations

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from console import components, theme
from console.testing import button, cards
from engine import AgentTask
from engine.agent import AgentExecutor, DemoBackend, register_handlers


@pytest.fixture
def bare_env(monkeypatch, redis_url, namespace):
    for name in ("CONSOLE_PASSWORD", "REDIS_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("QUEUE_NAMESPACE", namespace)
    yield
    st.cache_resource.clear()


def dashboard_script():
    import streamlit as st

    from console import render_task_queue_dashboard

    st.title("Someone else's app")
    render_task_queue_dashboard(key="left")                           # the sidebar
    render_task_queue_dashboard(key="right", container=st.container(), title="Queue (main)")


def monitor_script():
    from engine.agent import AgentExecutor

    from console import render_task_monitor

    render_task_monitor(AgentExecutor(), key="alpha")
    render_task_monitor(AgentExecutor(), key="beta")


def test_dashboard_twice_on_one_page_with_the_cached_default_queue(bare_env, queue):
    queue.submit_tasks([AgentTask({"query": "a"}), AgentTask({"query": "b"})])
    at = AppTest.from_function(dashboard_script, default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    sidebar = cards(at.sidebar)
    main = cards(at.main)
    expected = {"Pending": "2", "Running": "0", "Completed": "0", "Failed": "0", "Workers": "0",
                "Success rate": "—", "Batches running": "0"}
    assert sidebar == expected and main == expected
    assert at.get_by_key("left") is not None and at.get_by_key("right") is not None


def test_monitor_submits_through_the_executor_and_watches_the_answer(bare_env, queue, make_worker):
    at = AppTest.from_function(monitor_script, default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    submit_alpha = [b for b in at.button if b.label == "Submit" and "alpha" in (b.form_id or "")][0]
    submit_alpha.click().run()
    assert "Enter a query." in [e.value for e in at.error]          # nothing sent
    assert queue.get_queue_stats().submitted_tasks == 0
    at.text_area(key="alpha_query").input("What is 2 + 2?")
    at.selectbox(key="alpha_priority").set_value("urgent")
    [b for b in at.button if b.label == "Submit" and "alpha" in (b.form_id or "")][0].click().run()
    [task_id] = at.session_state["alpha_watched"]
    assert "beta_watched" not in at.session_state                     # the other copy is untouched
    record = queue.get_task(task_id)
    assert record["payload"] == {"query": "What is 2 + 2?"} and record["priority"] == "urgent"
    worker = make_worker()
    register_handlers(worker, queue.settings, AgentExecutor(queue=queue, backend=DemoBackend(0)))
    worker.start(burst=True)
    at.run()                                                           # one live refresh
    watched = at.get_by_key("alpha_watch_table").dataframe[0].value
    assert watched["Status"].tolist() == ["● completed"]
    assert "What is 2 + 2?" in watched["Answer / error"][0]


def test_monitor_uses_the_executors_own_queue(bare_env, queue):
    # An executor bound to a queue keeps it; the widget must not swap in another.
    def script(q):
        from engine.agent import AgentExecutor

        from console import render_task_monitor
        render_task_monitor(AgentExecutor(queue=q), key="own", refresh_seconds=0)

    at = AppTest.from_function(script, args=(queue,), default_timeout=30).run()
    at.text_area(key="own_query").input("bound")
    button(at, "Submit").click().run()
    assert queue.get_task(at.session_state["own_watched"][0])["payload"]["query"] == "bound"


def test_monitor_submits_once_on_a_double_click(bare_env, queue):
    def script(q):
        from engine.agent import AgentExecutor

        from console import render_task_monitor
        render_task_monitor(AgentExecutor(queue=q), key="twice", refresh_seconds=0)

    at = AppTest.from_function(script, args=(queue,), default_timeout=30).run()
    at.text_area(key="twice_query").input("just once")
    clicked = button(at, "Submit").click()
    states = clicked.root.get_widget_states()
    clicked.run()
    at._run(states)     # the same click again, from the page as the browser still showed it
    assert not at.exception, [e.value for e in at.exception]
    assert queue.search_tasks(task_type="agent_query")["total"] == 1
    assert len(at.session_state["twice_watched"]) == 1


def test_tables_colour_statuses_and_narrow_ids_but_keep_their_values():
    frame = pd.DataFrame({"Status": ["● failed", "● completed"], "Task id": ["0123" * 8, "x"],
                          "State": ["● running", "● lost"], "Name": ["a", "b"]})
    config = components.table_config(frame, {"Name": {"width": 50}}, short_ids=("Task id",))

    def colours(column):
        return {o["value"]: o["color"] for o in config[column]["type_config"]["options"]}
    assert colours("Status")["● failed"] == theme.TEXT_HEX["red"]
    assert colours("Status")["● completed"] == theme.TEXT_HEX["green"]
    assert colours("State")["● running"] == theme.TEXT_HEX["green"]   # a worker, not a task
    assert config["Task id"]["width"] == components.SHORT_ID_WIDTH
    assert config["Name"] == {"width": 50}                  # what the page configured stays
    assert frame["Status"].tolist() == ["● failed", "● completed"]   # the values are untouched
