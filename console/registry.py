"""Every page of the console, in one list: the navigation, each page's title and every
link between pages come from here (no Streamlit import: tests read it as data).

A page is named by its key everywhere else (``page_link("tasks", ...)``,
``render_frame("tasks")``); a key that is not here is an error, never a link that silently
disappears (tests/test_console_registry.py checks every call).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Page:
    """One console page: its key, its file (Streamlit's folder mode serves
    ``pages/<n>_<Name>.py`` at ``/<Name>``), its title and its icon."""

    key: str
    path: str
    title: str
    icon: str


PAGES: tuple[Page, ...] = (
    Page("overview", "app.py", "Overview", ":material/dashboard:"),
    Page("submit", "pages/1_Submit.py", "Submit", ":material/send:"),
    Page("tasks", "pages/2_Tasks.py", "Tasks", ":material/table_rows:"),
    Page("workers", "pages/3_Workers.py", "Workers", ":material/memory:"),
    Page("schedules", "pages/4_Schedules.py", "Schedules", ":material/schedule:"),
    Page("failed", "pages/5_Failed_tasks.py", "Failed tasks", ":material/error:"),
    Page("events", "pages/6_Events.py", "Events", ":material/bolt:"),
    Page("batches", "pages/7_Batches.py", "Batches", ":material/stacks:"),
    Page("audit", "pages/8_Audit.py", "Audit", ":material/policy:"),
    Page("limits", "pages/9_Limits.py", "Limits", ":material/speed:"),
)
_BY_KEY = {page.key: page for page in PAGES}


def page(key: str) -> Page:
    """The page registered as ``key``; KeyError naming the keys there are."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"no console page {key!r}: the pages are {', '.join(_BY_KEY)} "
                       "(console/registry.py)") from None
