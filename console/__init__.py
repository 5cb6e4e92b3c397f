"""The operations console for the agent task queue, as reusable Streamlit pieces.

Embeddable widgets (each takes a ``key`` prefix so two copies on one page never collide)::

    from console import render_task_queue_dashboard, render_task_monitor

    render_task_queue_dashboard()                      # live summary in the sidebar
    render_task_monitor(AgentExecutor(), key="agent")  # submit-and-watch panel

The modules without Streamlit (``data``, ``charts``, ``actions``, ``forms``,
``batch_jobs``, ``connection``, ``auth``, ``theme``) can be used on their own; this
package imports Streamlit only when a widget is first asked for.
"""
from __future__ import annotations

from typing import Any

__all__ = ["render_frame", "render_task_monitor", "render_task_queue_dashboard"]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562), so that importing console.data or console.batch_jobs elsewhere does
    # not drag Streamlit in.
    if name in ("render_task_queue_dashboard", "render_task_monitor"):
        from . import widgets
        return getattr(widgets, name)
    if name == "render_frame":
        from .frame import render_frame
        return render_frame
    raise AttributeError(f"module 'console' has no attribute {name!r}")
