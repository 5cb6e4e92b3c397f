"""Who is using the console, with which role, and what the page may show them.

With an ``[auth]`` section in ``.streamlit/secrets.toml`` the console signs people in with
OpenID Connect through Streamlit's own ``st.login`` and maps each identity to a role
(``engine.access.role_for``: ``CONSOLE_ADMINS``, ``CONSOLE_OPERATORS``, ``CONSOLE_VIEWERS``);
an identity no list names gets no access. Without it, whoever passed the password gate
(``CONSOLE_PASSWORD``), or anyone on a console without sign-in (it listens on 127.0.0.1),
is an admin, as before.

Every page then works on ``acting_as(queue, identity)``: the engine refuses a verb the
role does not allow and audits every change. Controls a role may not use are also hidden
(by their widget keys), so a viewer does not see buttons that would only be refused.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st

from engine import Settings
from engine.access import Identity, Role, acting_as, role_for

# Pages whose whole purpose needs a role (by the title the page passes to the frame).
PAGE_ROLES = {"Submit": Role.OPERATOR}
# Widget keys (prefixes) of controls per least role: Streamlit gives each keyed element
# the CSS class st-key-<key>.
OPERATOR_CONTROLS = ("tasks_sel_cancel", "tasks_sel_retry", "tasks_sel_requeue", "tasks_bulk_",
                     "tasks_detail_", "failed_retry_", "failed_confirm", "schedules_run_now",
                     "schedules_cancel", "batches_retry", "batches_cancel")
ADMIN_CONTROLS = ("tasks_sel_delete", "tasks_detail_delete", "failed_purge", "failed_delete_",
                  "schedules_delete", "recurring_pause", "recurring_resume", "recurring_remove",
                  "recurring_run", "recurring_add_form", "limits_budget")


def oidc_configured() -> bool:
    """Whether ``.streamlit/secrets.toml`` has an ``[auth]`` section for st.login."""
    try:
        return "auth" in st.secrets
    except Exception:   # no secrets file at all
        return False


def require_identity(settings: Settings) -> Identity:
    """The identity of this session; draws the sign-in (or no-access) page and stops the
    script until there is one with a role."""
    if not oidc_configured():
        if settings.console_password:
            return Identity("console password", Role.ADMIN, "password")
        return Identity("local console", Role.ADMIN, "local")
    if not st.user.is_logged_in:
        st.title("Agent Task Queue")
        st.subheader("Sign in")
        st.button("Sign in with single sign-on", type="primary", on_click=st.login,
                  key="oidc_sign_in")
        st.stop()
    email = str(st.user.get("email") or "")
    claim = st.user.get(settings.console_groups_claim) or []
    groups = tuple(str(g) for g in (claim if isinstance(claim, (list, tuple)) else [claim]))
    name = email or str(st.user.get("sub") or "unknown")
    role = role_for(settings, email, groups)
    if role is None:
        st.title("Agent Task Queue")
        st.error("You are signed in, but no role is configured for you. Ask an administrator "
                 "to add you to CONSOLE_VIEWERS, CONSOLE_OPERATORS or CONSOLE_ADMINS.")
        st.text(f"Signed in as {name}")
        st.button("Sign out", on_click=st.logout, key="oidc_sign_out_denied")
        st.stop()
    return Identity(name, role, "oidc", groups)


def guard_context(ctx: Any, identity: Identity, title: str) -> Any:
    """The page's context with its queue acting as ``identity``; hides the controls the
    role may not use, says who is signed in, and stops a page the role may not open."""
    with st.sidebar:
        st.caption(f":material/badge: {identity.name} · {identity.role.label}")
        if identity.source == "oidc":
            st.button("Sign out", on_click=st.logout, key="oidc_sign_out")
    hidden = [*(OPERATOR_CONTROLS if identity.role < Role.OPERATOR else ()),
              *(ADMIN_CONTROLS if identity.role < Role.ADMIN else ())]
    if hidden:
        selectors = ", ".join(f'[class*="st-key-{key}"]' for key in hidden)
        st.html(f"<style>{selectors} {{ display: none !important; }}</style>")
    needed = PAGE_ROLES.get(title)
    if needed is not None and identity.role < needed:
        st.title(title)
        st.info(f"This page needs the {needed.label} role; you are signed in as "
                f"{identity.role.label}.")
        st.stop()
    return dataclasses.replace(ctx, queue=acting_as(ctx.queue, identity))


def current_identity(ctx: Any) -> Identity | None:
    """The identity a page's queue acts as (None outside the frame)."""
    return getattr(ctx.queue, "identity", None)
