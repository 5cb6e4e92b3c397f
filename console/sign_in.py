"""A sign-in attempt from the console's login form, throttled in Redis (console/auth.py)."""
from __future__ import annotations

import redis
import streamlit as st

from engine import ConfigurationError, QueueUnavailable
from engine.embedded import RedisUnavailableError

from .auth import LoginOutcome, LoginThrottle
from .runtime import connect_console, load_settings

NO_REDIS = ("Signing in is unavailable: attempts are counted in Redis, and Redis is not "
            "reachable. Try again once it is.")


def client_address() -> str | None:
    """The browser's address as Streamlit sees it (behind a proxy: the proxy's, which then
    throttles everyone behind it together, the safe direction)."""
    try:
        address = st.context.ip_address
    except Exception:   # no browser context (scripts run in tests): counted as unknown
        return None
    return address[:64] if isinstance(address, str) and address else None


def attempt_sign_in(given: str | None, password: str) -> LoginOutcome:
    """Count the attempt and check the password; refused while its address, or everyone,
    is locked out. Fails closed when Redis cannot count it."""
    try:
        queue = connect_console(load_settings()).queue
        return LoginThrottle(queue.client, queue.keys).attempt(given, password, client_address())
    except (RedisUnavailableError, ConfigurationError, QueueUnavailable, redis.ConnectionError,
            redis.TimeoutError, redis.ResponseError):
        return LoginOutcome(ok=False, message=NO_REDIS)
