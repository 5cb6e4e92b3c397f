"""The red banner for a Redis that is unsafe to keep a queue in (engine/health.py).

Checked at most once a minute per server process and connection (``st.cache_data``), so
the banner also appears when an operator changes the policy while the console runs.
"""
from __future__ import annotations

import redis
import streamlit as st

from engine.health import CHECK_INTERVAL_SECONDS, check_redis

from .runtime import ConsoleContext


@st.cache_data(ttl=CHECK_INTERVAL_SECONDS, show_spinner=False)
def _problems(url: str, namespace: str, embedded: bool, _ctx: ConsoleContext) -> list[tuple[str, str]]:
    try:
        health = check_redis(_ctx.queue.client, _ctx.queue.keys.stats)
    except (redis.RedisError, OSError):
        return []       # unreachable is reported elsewhere on the page
    return health.problems(embedded=embedded)


def render_redis_health(ctx: ConsoleContext) -> None:
    """A red banner when Redis evicts keys; a warning when its persistence is off (unless
    the console started that Redis itself)."""
    for level, message in _problems(ctx.connection.url, ctx.queue.namespace,
                                    ctx.connection.embedded, ctx):
        if level == "error":
            st.error(message, icon=":material/warning:")
        else:
            st.warning(message, icon=":material/save:")
