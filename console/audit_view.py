"""Audit page: every state-changing action taken through the console (engine.access),
newest first, with who, role, what, which tasks, when and the outcome; exportable as CSV."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engine import QueueUnavailable
from engine.access import AUDIT_COLUMNS, audit_csv, read_audit

KEY = "audit"
PAGE_SIZE = 200
EXPORT_LIMIT = 10_000     # entries in one CSV export


def render(ctx) -> None:
    """Draw the Audit page."""
    st.caption("Who changed what, and when: every submit, cancel, retry, requeue, delete, "
               "purge and schedule change made through this console, including the ones "
               "the engine refused. Kept in Redis (the newest 100,000 entries).")
    before = st.session_state.get(f"{KEY}_before")
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
