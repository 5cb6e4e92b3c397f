"""Login: the password gate on every page (deep links too), and secrets never shown."""
from __future__ import annotations

import socket

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from console.auth import fingerprint, password_matches
from console.testing import APP, ROOT, button, cards, texts
from engine import AgentTask

PASSWORD = "correct horse battery"


@pytest.fixture
def locked_console(monkeypatch, redis_url, namespace):
    monkeypatch.delenv("REDIS_HOST", raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("QUEUE_NAMESPACE", namespace)
    monkeypatch.setenv("CONSOLE_PASSWORD", PASSWORD)
    yield
    st.cache_resource.clear()


def assert_locked(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_input(key="login_password") is not None
    assert not at.dataframe and not at.metric, "data shown before sign-in"
    assert [t.value for t in at.title] == [":material/explore: Agent Task Queue"]


def test_password_gate_on_the_entry_page(locked_console, queue):
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert_locked(at)
    at.text_input(key="login_password").input("wrong")
    button(at, "Sign in").click().run()
    assert_locked(at)
    assert [e.value for e in at.error] == ["Wrong password."]
    at.text_input(key="login_password").input(PASSWORD)
    button(at, "Sign in").click().run()
    assert [t.value for t in at.title] == ["Overview"]
    assert set(cards(at.main)) >= {"Pending", "Completed", "Failed"}
    assert "Signed in" in texts(at.sidebar)
    assert PASSWORD not in texts(at)
    button(at, "Sign out").click().run()
    assert_locked(at)


def test_deep_link_to_a_page_file_shows_the_login_not_the_table(locked_console, queue):
    # As a fresh server would run it: the page file itself is the script, no entry page.
    queue.submit_task(AgentTask({"query": "secret work"}))
    at = AppTest.from_file(str(ROOT / "pages" / "2_Tasks.py"), default_timeout=30).run()
    assert_locked(at)
    assert "secret work" not in texts(at)


def test_every_page_file_asks_for_the_password(locked_console):
    for page in sorted((ROOT / "pages").glob("*.py")):
        at = AppTest.from_file(str(page), default_timeout=30).run()
        assert_locked(at)


def test_an_unreachable_redis_is_reported_with_its_password_masked(monkeypatch):
    with socket.socket() as sock:           # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.delenv("CONSOLE_PASSWORD", raising=False)
    monkeypatch.setenv("REDIS_URL", f"redis://:hunter2@127.0.0.1:{port}/0")
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    shown = texts(at) + texts(at.sidebar)
    assert "Redis is not reachable" in shown and f"127.0.0.1:{port}" in shown
    assert "hunter2" not in shown and "***" in shown
    assert not at.metric


def test_password_check_is_exact():
    assert password_matches(PASSWORD, PASSWORD)
    assert not password_matches(PASSWORD + " ", PASSWORD)
    assert not password_matches("", PASSWORD) and not password_matches(None, PASSWORD)
    assert not password_matches("anything", None)        # no password set: nothing matches
    assert password_matches("pässwörd", "pässwörd")
    assert fingerprint("a") != fingerprint("b") and PASSWORD not in fingerprint(PASSWORD)
