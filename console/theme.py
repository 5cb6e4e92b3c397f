"""Colours, markers and labels shared by every page, so a status looks the same everywhere.

No emoji: a browser without an emoji font (Debian's Chromium has none) draws them as
empty boxes. A status is the word after a plain ``●`` (in every text font), coloured:

- in tables (drawn on a canvas: no Markdown, no icon font) as coloured labels, see
  ``console.components.table_config`` (the cell keeps its text);
- in Markdown (captions, expander labels) by Streamlit's colour directive, see
  :func:`status_markdown`.
"""
from __future__ import annotations

from engine.keys import PRIORITY_NAMES, STATUS_NAMES

MARKER = "●"
# Streamlit's colour names (st.badge, ``:color[...]`` in Markdown) for each status...
STATUS_COLOR = {
    "pending": "blue", "scheduled": "violet", "running": "yellow", "retry": "orange",
    "completed": "green", "failed": "red", "cancelled": "gray",
    "corrupt": "red",           # a record the engine could not read (see engine.reads.task_record)
}
WORKER_STATE_COLOR = {"running": "green", "starting": "yellow", "stopping": "yellow",
                      "stopped": "gray", "lost": "red"}
SCHEDULE_STATE_COLOR = {"active": "green", "paused": "gray"}
STATE_COLOR = {**WORKER_STATE_COLOR, **SCHEDULE_STATE_COLOR}     # a "State" column's words
# ...and the text colour a table cell gets for each of those names (dark enough to read
# on white).
TEXT_HEX = {"blue": "#1d4ed8", "violet": "#6d28d9", "yellow": "#a16207", "orange": "#c2410c",
            "green": "#15803d", "red": "#b91c1c", "gray": "#6b7280"}
CHART_COLORS = {"submitted": "#2563eb", "completed": "#16a34a", "failed": "#dc2626",
                "retried": "#f59e0b", "wait": "#7c3aed", "run": "#0891b2"}
# Table columns whose cells are status labels, coloured wherever they appear: a task's
# status, or a worker's or schedule's state.
STATUS_COLUMNS = {"Status": STATUS_COLOR, "Status now": STATUS_COLOR, "State": STATE_COLOR}

STATUSES = STATUS_NAMES                  # index order used by the engine
PRIORITIES = PRIORITY_NAMES              # claim order: urgent, high, normal, low
ACTIVE = ("pending", "scheduled", "running", "retry")
FINISHED = ("completed", "failed", "cancelled")


def status_label(status: str | None) -> str:
    """``"● failed"``: the status after its marker (``"—"`` when unknown). The word stays
    in the text, so a table can be searched and read without colour."""
    if not status:
        return "—"
    return f"{MARKER} {status}"


def worker_state_label(state: str | None) -> str:
    """``"● lost"``: a worker state after its marker."""
    return f"{MARKER} {state or 'unknown'}"


def status_markdown(word: str | None, colors: dict[str, str] = STATUS_COLOR) -> str:
    """``":red[●] failed"``: a status (or, with ``colors=STATE_COLOR``, a worker or
    schedule state) for Markdown, its marker coloured."""
    word = word or "unknown"
    return f":{colors.get(word, 'gray')}[{MARKER}] {word}"
