"""Plotly figures for the Overview page: pure functions from engine rows to a Figure.

They take the rows of ``TaskQueue.throughput(minutes)`` (oldest first) and never touch
Redis or Streamlit, so they can be tested and reused on their own.
"""
from __future__ import annotations

from typing import Any, Sequence

import pandas as pd
import plotly.graph_objects as go

from .theme import CHART_COLORS

# The legend goes under the plot, below the time axis' labels: above it, a legend of
# four entries wrapped onto two lines and covered the title. The bottom margin holds a
# legend of two lines, so charts side by side keep plots of one height (a longer legend
# grows the margin: margin.autoexpand).
_LAYOUT = dict(template="plotly_white", height=320, margin=dict(l=10, r=10, t=40, b=80),
               legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0.0,
                           traceorder="normal"),
               hovermode="x unified")


def _minutes(rows: Sequence[dict[str, Any]]) -> pd.Series:
    return pd.to_datetime(pd.Series([r["minute"] for r in rows], dtype=object), utc=True,
                          format="ISO8601")


def _empty(title: str, message: str) -> go.Figure:
    figure = go.Figure()
    figure.update_layout(title=title, **_LAYOUT)
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper",
                          yref="paper", font=dict(size=14, color="#6b7280"))
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return figure


def throughput_figure(rows: Sequence[dict[str, Any]], title: str = "Tasks per minute") -> go.Figure:
    """Completed and failed tasks per minute as stacked bars, submitted as a line."""
    if not rows:
        return _empty(title, "No data yet")
    x = _minutes(rows)
    figure = go.Figure()
    for name in ("completed", "failed"):
        figure.add_trace(go.Bar(x=x, y=[r.get(name, 0) for r in rows], name=name.capitalize(),
                                marker_color=CHART_COLORS[name]))
    figure.add_trace(go.Scatter(x=x, y=[r.get("submitted", 0) for r in rows], name="Submitted",
                                mode="lines", line=dict(color=CHART_COLORS["submitted"], width=2)))
    figure.update_layout(title=title, barmode="stack", **_LAYOUT)
    figure.update_yaxes(title_text="tasks / minute", rangemode="tozero")
    return figure


def latency_figure(rows: Sequence[dict[str, Any]], title: str = "Latency (p50 / p95)") -> go.Figure:
    """Queue wait and run time, p50 solid and p95 dotted, in seconds. Minutes with no
    finished task are gaps, not zeros: a zero would claim an instant task."""
    if not rows:
        return _empty(title, "No data yet")
    x = _minutes(rows)
    figure = go.Figure()
    for kind, label in (("wait", "Queue wait"), ("run", "Run time")):
        for q, dash in (("p50", "solid"), ("p95", "dot")):
            values = [_seconds(r.get(f"{kind}_{q}_ms")) for r in rows]
            figure.add_trace(go.Scatter(x=x, y=values, name=f"{label} {q}", mode="lines+markers",
                                        connectgaps=False, marker=dict(size=4),
                                        line=dict(color=CHART_COLORS[kind], dash=dash, width=2)))
    figure.update_layout(title=title, **_LAYOUT)
    figure.update_yaxes(title_text="seconds", rangemode="tozero")
    return figure


def totals(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Sums of the per-minute counters over ``rows``."""
    return {name: sum(int(r.get(name) or 0) for r in rows)
            for name in ("submitted", "completed", "failed", "retried")}


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000.0, 3)
