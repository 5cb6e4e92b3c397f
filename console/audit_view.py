"""Audit page: every state-changing action taken through the console (engine.access),
newest first, with who, role, what, which tasks, when and the outcome; exportable as CSV.
How far back the page reads lives in the URL (``/Audit?before=<entry id>``)."""
from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from engine import QueueUnavailable
from engine.access import AUDIT_COLUMNS, Role, audit_csv, read_audit, write_audit

from .auth import LoginThrottle
from .text import md
from .url_state import UrlParam, UrlState

KEY = "audit"
PAGE_SIZE = 200
EXPORT_LIMIT = 10_000     # entries in one CSV export
ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")     # a Redis stream entry id
URL = UrlState(KEY, (UrlParam("before", f"{KEY}_before"),), markers=(f"{KEY}_newest",))


def render(ctx) -> None:
    """Draw the Audit page: current sign-in lockouts, then the audit trail."""
    URL.restore()
    _lockouts(ctx)
    st.caption("Who changed what, and when: every submit, cancel, retry, requeue, delete, "
               "purge and schedule change made through this console, including the ones "
               "the engine refused. Kept in Redis (the newest 100,000 entries).")
    before = st.session_state.get(f"{KEY}_before") or None
    if before and not ENTRY_ID.fullmatch(before):      # from a hand-edited link
        st.warning(f"{md(before, 60)} is not an audit entry id: showing the newest entries.")
        before = st.session_state[f"{KEY}_before"] = None
    try:
        entries = read_audit(ctx.queue, PAGE_SIZE, before)
    except QueueUnavailable as exc:
        st.error(f"Redis did not answer: {exc}")
        return
    if not entries:
        st.info("Nothing audited yet." if before is None else "No older entries.")
    else:
        frame = pd.DataFrame([{**e, "tasks": " ".join(e["tasks"])} for e in entries],
                             columns=list(AUDIT_COLUMNS))
        st.dataframe(frame, hide_index=True, key=f"{KEY}_table",
                     column_config={"tasks": st.column_config.TextColumn("tasks", width="large")})
    newer, older, export = st.columns(3)
    newer.button("Newest", key=f"{KEY}_newest", disabled=before is None,
                 on_click=lambda: st.session_state.pop(f"{KEY}_before", None))
    if entries and len(entries) == PAGE_SIZE:
        older.button("Older", key=f"{KEY}_older",
                     on_click=lambda: st.session_state.update({f"{KEY}_before": entries[-1]["id"]}))
    export.download_button("Export CSV", key=f"{KEY}_export", on_click="ignore",
                           data=lambda: audit_csv(read_audit(ctx.queue, EXPORT_LIMIT)),
                           file_name="audit.csv", mime="text/csv")
    URL.publish()


def _lockouts(ctx) -> None:
    """Sign-in lockouts in force (console/auth.py), each liftable by an admin (audited)."""
    try:
        locks = LoginThrottle(ctx.queue.client, ctx.queue.keys).lockouts()
    except QueueUnavailable:
        return
    if not locks:
        st.caption(":material/lock_open: No sign-in lockout in force.")
        return
    st.warning(f"{len(locks)} sign-in lockout(s) in force: too many password attempts.",
               icon=":material/lock:")
    identity = getattr(ctx.queue, "identity", None)
    for lock in locks:
        left, right = st.columns([4, 1], vertical_alignment="center")
        who = "all addresses together" if lock.scope == "*" else f"address {lock.scope}"
        left.text(f"{who}: {lock.attempts} attempts, {lock.seconds_left} s left")
        if identity is not None and identity.role >= Role.ADMIN:
            right.button("Lift", key=f"{KEY}_lift_{lock.scope}", on_click=_lift,
                         args=(ctx, identity, lock.scope))


def _lift(ctx, identity, scope: str) -> None:
    LoginThrottle(ctx.queue.client, ctx.queue.keys).clear(scope)
    write_audit(ctx.queue, identity, "lift_sign_in_lockout", [scope], "ok")
