"""Plotly figures for the Overview page: pure functions from engine rows to a figure.

They take the rows of ``TaskQueue.throughput(minutes)`` (oldest first) and never touch
Redis or Streamlit, so they can be tested and reused on their own. Each chart is first
a *spec*: the figure as plain JSON-ready dicts (``{"data": [...], "layout": {...}}``),
which the Overview's live panel sends as it is, drawn by Plotly in the browser.
``throughput_figure``/``latency_figure`` wrap a spec in a ``go.Figure`` for Python use.
Building a ``go.Figure`` validates every property: about 37 ms for the two charts, once
a tick, which was most of what one open Overview cost the server; the spec takes a
fraction of a millisecond.
"""
from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Sequence

import plotly.graph_objects as go

from .theme import CHART_COLORS

Spec = dict[str, Any]
TEMPLATE = "plotly_white"
# The legend goes under the plot, below the time axis' labels: above it, a legend of
# four entries wrapped onto two lines and covered the title. The bottom margin holds a
# legend of two lines, so charts side by side keep plots of one height (a longer legend
# grows the margin: margin.autoexpand).
_LAYOUT = dict(height=320, margin=dict(l=10, r=10, t=40, b=80),
               legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0.0,
                           traceorder="normal"),
               hovermode="x unified")


def _layout(title: str, **more: Any) -> dict[str, Any]:
    return {"template": TEMPLATE, "title": {"text": title}, **_LAYOUT, **more}


def _minutes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The rows' minutes as UTC wall times, the form Plotly's JSON gives a UTC timestamp."""
    return [datetime.fromisoformat(r["minute"]).astimezone(timezone.utc)
            .strftime("%Y-%m-%d %H:%M:%S") for r in rows]


def _empty(title: str, message: str) -> Spec:
    return {"data": [], "layout": _layout(
        title, annotations=[dict(text=message, showarrow=False, x=0.5, y=0.5, xref="paper",
                                 yref="paper", font=dict(size=14, color="#6b7280"))],
        xaxis={"visible": False}, yaxis={"visible": False})}


def throughput_spec(rows: Sequence[dict[str, Any]], title: str = "Tasks per minute") -> Spec:
    """Completed and failed tasks per minute as stacked bars, submitted as a line."""
    if not rows:
        return _empty(title, "No data yet")
    x = _minutes(rows)
    data = [dict(type="bar", x=x, y=[r.get(name, 0) for r in rows], name=name.capitalize(),
                 marker=dict(color=CHART_COLORS[name])) for name in ("completed", "failed")]
    data.append(dict(type="scatter", x=x, y=[r.get("submitted", 0) for r in rows],
                     name="Submitted", mode="lines",
                     line=dict(color=CHART_COLORS["submitted"], width=2)))
    return {"data": data, "layout": _layout(
        title, barmode="stack", yaxis={"title": {"text": "tasks / minute"}, "rangemode": "tozero"})}


def latency_spec(rows: Sequence[dict[str, Any]], title: str = "Latency (p50 / p95)") -> Spec:
    """Queue wait and run time, p50 solid and p95 dotted, in seconds. Minutes with no
    finished task are gaps, not zeros: a zero would claim an instant task."""
    if not rows:
        return _empty(title, "No data yet")
    x = _minutes(rows)
    data = [dict(type="scatter", x=x, y=[_seconds(r.get(f"{kind}_{q}_ms")) for r in rows],
                 name=f"{label} {q}", mode="lines+markers", connectgaps=False,
                 marker=dict(size=4), line=dict(color=CHART_COLORS[kind], dash=dash, width=2))
            for kind, label in (("wait", "Queue wait"), ("run", "Run time"))
            for q, dash in (("p50", "solid"), ("p95", "dot"))]
    return {"data": data, "layout": _layout(
        title, yaxis={"title": {"text": "seconds"}, "rangemode": "tozero"})}


def throughput_figure(rows: Sequence[dict[str, Any]], title: str = "Tasks per minute") -> go.Figure:
    """:func:`throughput_spec` as a Plotly figure."""
    return go.Figure(throughput_spec(rows, title))


def latency_figure(rows: Sequence[dict[str, Any]], title: str = "Latency (p50 / p95)") -> go.Figure:
    """:func:`latency_spec` as a Plotly figure."""
    return go.Figure(latency_spec(rows, title))


def browser_spec(spec: Spec) -> Spec:
    """``spec`` as Plotly in the browser takes it: the template named in its layout
    replaced by the template itself (plotly.js knows no template names)."""
    layout = spec["layout"]
    if isinstance(layout.get("template"), str):
        layout = {**layout, "template": _template(layout["template"])}
    return {"data": spec["data"], "layout": layout}


@lru_cache(maxsize=4)
def _template(name: str) -> dict[str, Any]:
    import plotly.io as pio
    return pio.templates[name].to_plotly_json()


def totals(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Sums of the per-minute counters over ``rows``."""
    return {name: sum(int(r.get(name) or 0) for r in rows)
            for name in ("submitted", "completed", "failed", "retried")}


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000.0, 3)
