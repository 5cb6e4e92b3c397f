"""Password guessing is throttled in Redis: per client address and for all addresses
together, counted before the password is checked (parallel sessions gain nothing), with
a lockout the sign-in page states and an operator can list and clear."""
from __future__ import annotations

import threading

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from console.auth import ADDRESS_LIMIT, LoginThrottle
from console.testing import APP, button, texts

PASSWORD = "correct horse battery"


@pytest.fixture
def throttle(queue):
    return LoginThrottle(queue.client, queue.keys, address_limit=3, global_limit=5, window=60)


def test_an_address_past_its_limit_is_locked_even_with_the_right_password(throttle):
    for _ in range(3):
        assert throttle.attempt("guess", PASSWORD, "10.0.0.1").message == "Wrong password."
    locked = throttle.attempt(PASSWORD, PASSWORD, "10.0.0.1")
    assert not locked.ok and 0 < locked.locked_for <= 60
    assert "Too many sign-in attempts from this address" in locked.message
    assert throttle.attempt(PASSWORD, PASSWORD, "10.0.0.2").ok      # others are not locked


def test_a_success_gives_its_attempt_back(throttle):
    for _ in range(2):
        throttle.attempt("guess", PASSWORD, "10.0.0.1")
    assert throttle.attempt(PASSWORD, PASSWORD, "10.0.0.1").ok
    for _ in range(3):          # the address starts afresh
        assert throttle.attempt("guess", PASSWORD, "10.0.0.1").message == "Wrong password."


def test_guesses_spread_over_addresses_hit_the_global_limit(throttle):
    outcomes = [throttle.attempt("guess", PASSWORD, f"10.0.1.{i}") for i in range(7)]
    assert [o.message for o in outcomes[:5]] == ["Wrong password."] * 5
    assert all("from all addresses together" in o.message for o in outcomes[5:])
    assert not throttle.attempt(PASSWORD, PASSWORD, "10.0.9.9").ok


def test_parallel_sessions_get_no_more_guesses_than_one(queue):
    throttle = LoginThrottle(queue.client, queue.keys)
    checked, barrier = [], threading.Barrier(12)

    def guess():
        barrier.wait()
        checked.append(throttle.attempt("guess", PASSWORD, "10.0.0.7").message)

    threads = [threading.Thread(target=guess) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert checked.count("Wrong password.") == ADDRESS_LIMIT
    assert sum("Too many" in message for message in checked) == 12 - ADDRESS_LIMIT


def test_an_operator_lists_and_clears_lockouts(queue):
    throttle = LoginThrottle(queue.client, queue.keys, address_limit=3, window=60)
    for _ in range(4):
        throttle.attempt("guess", PASSWORD, "10.0.0.1")
    throttle.attempt("guess", PASSWORD, "10.0.0.3")
    [lockout] = throttle.lockouts()
    assert (lockout.scope, lockout.attempts) == ("10.0.0.1", 4) and 0 < lockout.seconds_left <= 60
    assert throttle.clear("10.0.0.1")
    assert throttle.lockouts() == []
    assert throttle.attempt(PASSWORD, PASSWORD, "10.0.0.1").ok


@pytest.fixture
def locked_console(monkeypatch, redis_url, namespace):
    monkeypatch.delenv("REDIS_HOST", raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("QUEUE_NAMESPACE", namespace)
    monkeypatch.setenv("CONSOLE_PASSWORD", PASSWORD)
    monkeypatch.setattr("console.frame.FAILED_LOGIN_DELAY", 0.0)
    yield
    st.cache_resource.clear()


def test_the_sign_in_page_locks_after_the_limit_and_says_so(locked_console, queue):
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    for _ in range(ADDRESS_LIMIT):
        at.text_input(key="login_password").input("wrong")
        button(at, "Sign in").click().run()
        assert [e.value for e in at.error] == ["Wrong password."]
    at.text_input(key="login_password").input(PASSWORD)
    button(at, "Sign in").click().run()
    assert "Too many sign-in attempts" in texts(at)
    assert not at.metric, "signed in while locked out"
    assert LoginThrottle(queue.client, queue.keys).lockouts()[0].attempts == ADDRESS_LIMIT + 1


def test_the_audit_page_lists_lockouts_and_an_admin_lifts_one(locked_console, queue, monkeypatch):
    monkeypatch.delenv("CONSOLE_PASSWORD")
    throttle = LoginThrottle(queue.client, queue.keys)
    for _ in range(ADDRESS_LIMIT + 1):
        throttle.attempt("guess", PASSWORD, "10.0.0.9")
    page = AppTest.from_file(str(APP).replace("app.py", "pages/8_Audit.py"), default_timeout=30).run()
    assert "address 10.0.0.9: 6 attempts" in texts(page)
    button(page, "Lift").click().run()
    assert throttle.lockouts() == []
    assert "No sign-in lockout in force" in texts(page)
    from engine.access import read_audit
    assert read_audit(queue)[0]["action"] == "lift_sign_in_lockout"
