"""The frame every page draws first: page config, login, connection, sidebar.

Every page file calls :func:`render_frame` before anything else, so no page — not even
one reached by a deep link on a fresh server — can show data before the login.
"""
from __future__ import annotations

import time

import streamlit as st

from engine import ConfigurationError
from engine.embedded import RedisUnavailableError

from .auth import fingerprint
from .components import page_link, show_toasts
from .registry import PAGES, page
from .connection import EMBEDDED_CONCURRENCY, describe_mode
from .identity import guard_context, require_identity
from .live_panel import forget_session
from .redis_health import render_redis_health
from .runtime import ConsoleContext, connect_console, load_settings
from .sign_in import attempt_sign_in
from .widgets import render_task_queue_dashboard

APP_TITLE = "Agent Task Queue"
APP_ICON = ":material/explore:"     # Streamlit's icon font: no emoji font needed
AUTH_KEY = "console_auth"
FAILED_LOGIN_DELAY = 1.0     # seconds: makes guessing the password slow


def render_frame(key: str) -> ConsoleContext:
    """Draw the shared frame of the page registered as ``key`` (console/registry.py) and
    return its context; stops the page (st.stop) until the operator has signed in, when
    ``CONSOLE_PASSWORD`` is set."""
    title = page(key).title
    st.set_page_config(page_title=f"{title} · {APP_TITLE}", page_icon=APP_ICON, layout="wide",
                       initial_sidebar_state="expanded")
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        st.error(f"The console cannot start: {exc}")
        st.stop()
    _require_login(settings.console_password)
    identity = require_identity(settings)     # OpenID Connect sign-in and role, when configured
    try:
        ctx = connect_console(settings)
    except (RedisUnavailableError, ConfigurationError) as exc:
        _sidebar_header()
        st.error(f"**Redis is not reachable.** {exc}")
        st.info("Start that Redis, correct REDIS_URL, or unset REDIS_URL (and REDIS_HOST) "
                "to run on an embedded Redis. This page retries when reloaded.")
        st.stop()
    _sidebar(ctx)
    ctx = guard_context(ctx, identity, title)   # the engine checks the role of every change
    render_redis_health(ctx)
    st.title(title)
    show_toasts()       # the answers of actions taken in this run's callbacks
    return ctx


# -- login -------------------------------------------------------------------------------------
def _require_login(password: str | None) -> None:
    if not password:
        return
    if st.session_state.get(AUTH_KEY) == fingerprint(password):
        return
    st.title(f"{APP_ICON} {APP_TITLE}")
    st.subheader("Sign in")
    with st.form("login_form", border=True, width=420):
        st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        outcome = attempt_sign_in(st.session_state.get("login_password", ""), password)
        if outcome.ok:
            st.session_state[AUTH_KEY] = fingerprint(password)
            st.rerun()
        time.sleep(FAILED_LOGIN_DELAY)
        st.error(outcome.message)
    st.caption("This console can cancel and delete tasks: it asks for the password set in "
               "CONSOLE_PASSWORD.")
    st.stop()


def _sign_out() -> None:
    st.session_state.pop(AUTH_KEY, None)
    forget_session()        # this session's live panels stop answering at once


# -- sidebar -----------------------------------------------------------------------------------
def _sidebar_header() -> None:
    with st.sidebar:
        st.markdown(f"## {APP_ICON} {APP_TITLE}")


def _sidebar(ctx: ConsoleContext) -> None:
    _sidebar_header()
    with st.sidebar:
        _navigation()
    # A fragment: it keeps ticking on every page without rerunning the page around it.
    render_task_queue_dashboard(ctx.queue, key="sidebar_summary", container=st.sidebar,
                                refresh_seconds=ctx.refresh_seconds)
    with st.sidebar:
        _connection_panel(ctx)
        _access_panel(ctx)


def _navigation() -> None:
    # Streamlit's own page list would name the entry page "app"; ours names every page.
    for entry in PAGES:
        page_link(entry.key, entry.title, entry.icon)


def _connection_panel(ctx: ConsoleContext) -> None:
    st.markdown("**Connection**")
    if ctx.connection.embedded:
        st.warning(
            f"**Running embedded.** {describe_mode(ctx.connection.mode)} An in-process worker "
            f"({EMBEDDED_CONCURRENCY} slots, demo agent) runs the tasks. Nothing is shared with "
            "other machines, and the tasks are gone when the console stops.\n\n"
            "Set `REDIS_URL` for a shared Redis, and run `python worker.py` for workers.",
            icon=":material/science:")
        _demo_knobs(ctx)
        st.caption(f"Redis `{ctx.display_url}` · namespace `{ctx.queue.namespace}`")
    else:
        st.success(f"Connected to `{ctx.display_url}`", icon=":material/check_circle:")
        st.caption(f"Namespace `{ctx.queue.namespace}` · start workers with `python worker.py`")


def _demo_knobs(ctx: ConsoleContext) -> None:
    """How to make the demo agent slow or failing on purpose (set before starting)."""
    settings = ctx.settings
    st.caption(
        f"Demo agent: {settings.agent_demo_latency:g} s per answer, "
        f"{settings.agent_demo_failure_rate:.0%} of answers fail, retried after "
        f"{settings.default_retry_delay:g} s. To watch failures and retries, start with e.g. "
        "`AGENT_DEMO_FAILURE_RATE=0.3 AGENT_DEMO_LATENCY=2 QUEUE_RETRY_DELAY=5 "
        "QUEUE_MAX_RETRIES=1 streamlit run app.py`.")


def _access_panel(ctx: ConsoleContext) -> None:
    if ctx.settings.console_password:
        left, right = st.columns([2, 1], vertical_alignment="center")
        left.caption(":material/lock: Signed in")
        right.button("Sign out", key="sign_out", on_click=_sign_out)
    else:
        st.caption(":material/lock_open: login disabled (set CONSOLE_PASSWORD)")

