"""A running task's progress bar and its answer so far (``task.report_progress`` and
``task.stream`` in a handler; engine/progress.py), for the task detail and the monitor
widget. Both redraw inside their page's live fragment, so the bar moves and the answer
grows at each refresh. The answer is the handler's text: drawn as text, never markup."""
from __future__ import annotations

from typing import Any

import streamlit as st

from .text import md


def progress_label(fraction: float | None, message: str | None) -> str:
    """"40% · reading the sources": the percentage and the message, as Markdown-safe text."""
    parts = [] if fraction is None else [f"{fraction:.0%}"]
    if message:
        parts.append(md(message, 200))
    return " · ".join(parts)


def task_progress(record: dict[str, Any], key: str) -> None:
    """The task's progress bar and streamed answer, when its current attempt reported any
    (nothing is drawn for a task that never did)."""
    fraction, partial = record.get("progress"), record.get("partial") or ""
    if fraction is None and not partial:
        return
    with st.container(key=f"{key}_progress"):
        if fraction is not None:
            st.progress(fraction, text=progress_label(fraction, record.get("progress_message")))
        elif record.get("progress_message"):
            st.caption(md(record["progress_message"], 200))
        if partial:
            running = record.get("status") == "running"
            st.caption("Answer so far (it grows while the task runs)" if running
                       else "Streamed answer (the result tab has what the handler returned)")
            st.code(partial, language=None, wrap_lines=True)
