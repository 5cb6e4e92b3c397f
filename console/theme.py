"""Colours, icons and labels shared by every page, so a status looks the same everywhere."""
from __future__ import annotations

from engine.keys import PRIORITY_NAMES, STATUS_NAMES

# Table cells cannot be coloured without a Styler, so each status carries a coloured
# marker; the status word stays next to it so the text remains searchable.
STATUS_ICON = {
    "pending": "🔵", "scheduled": "🟣", "running": "🟡", "retry": "🟠",
    "completed": "🟢", "failed": "🔴", "cancelled": "⚪",
}
# st.badge colours for the same statuses.
STATUS_COLOR = {
    "pending": "blue", "scheduled": "violet", "running": "orange", "retry": "orange",
    "completed": "green", "failed": "red", "cancelled": "gray",
}
WORKER_STATE_ICON = {"running": "🟢", "starting": "🟡", "stopping": "🟡", "stopped": "⚪",
                     "lost": "🔴"}
CHART_COLORS = {"submitted": "#2563eb", "completed": "#16a34a", "failed": "#dc2626",
                "retried": "#f59e0b", "wait": "#7c3aed", "run": "#0891b2"}

STATUSES = STATUS_NAMES                  # index order used by the engine
PRIORITIES = PRIORITY_NAMES              # claim order: urgent, high, normal, low
ACTIVE = ("pending", "scheduled", "running", "retry")
FINISHED = ("completed", "failed", "cancelled")


def status_label(status: str | None) -> str:
    """``"🔴 failed"``: the status with its colour marker (``"—"`` when unknown)."""
    if not status:
        return "—"
    return f"{STATUS_ICON.get(status, '⚫')} {status}"


def worker_state_label(state: str | None) -> str:
    """``"🔴 lost"``: a worker state with its colour marker."""
    state = state or "unknown"
    return f"{WORKER_STATE_ICON.get(state, '⚫')} {state}"
