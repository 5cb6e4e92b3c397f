"""A live panel: what a live part of a page shows, as plain JSON the browser draws.

A page's live part used to be a Streamlit fragment that reran every tick in every open
session; each rerun costs the server a script run and a websocket message per element,
so twenty idle pages cost four times one. A live panel is built once per tick for every
session (console/live.py), sent as JSON, and drawn by a small browser-side component
(console/static/live_panel.js) that polls for the next one: an idle page costs the
server one small HTTP answer a tick.

Every value in a panel is text or a number, drawn by the browser as text
(``textContent``), never as markup: task ids, queries and errors come from outside.

No Streamlit here: panels are built in the server's request threads as well as in
scripts, and tests read them as dicts.
"""
from __future__ import annotations

import json
import math
from datetime import tzinfo
from typing import Any, Sequence

import pandas as pd

from .charts import browser_spec
from .theme import STATUS_COLUMNS, TEXT_HEX
from .timefmt import EMPTY, local_text, utc_text

TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
TABLE_TIME = "%m-%d %H:%M:%S"       # a table's narrow times: the year and zone on hover


class Panel:
    """Blocks drawn top to bottom. Each method appends one block and returns the panel."""

    def __init__(self) -> None:
        self.blocks: list[dict[str, Any]] = []

    def heading(self, title: str, note: str = "") -> "Panel":
        """A bold title, with a quieter note after it on the same line."""
        return self._add("heading", title=title, note=note)

    def line(self, *parts: str | tuple[str, bool]) -> "Panel":
        """One line of text; a ``(text, True)`` part is drawn bold."""
        return self._add("line", parts=[_part(p) for p in parts])

    def caption(self, text: str) -> "Panel":
        """A small grey line."""
        return self._add("caption", text=text)

    def warning(self, text: str) -> "Panel":
        """A yellow line: part of the panel could not be read."""
        return self._add("warning", text=text)

    def metrics(self, cells: Sequence[tuple[str, str] | tuple[str, str, str]], per_row: int,
                border: bool = False) -> "Panel":
        """Label-over-value cards, ``per_row`` a row; a third item is the hover help."""
        return self._add("metrics", per_row=per_row, border=border,
                         cells=[{"label": c[0], "value": c[1], "help": c[2] if len(c) > 2 else ""}
                                for c in cells])

    def table(self, frame: pd.DataFrame, zone: tzinfo, *, empty: str = "Nothing to show.",
              widths: dict[str, int] | None = None, ids: Sequence[str] | None = None,
              selectable: bool = False, short_ids: Sequence[str] = (),
              name: str = "", time_format: str = TIME_FORMAT) -> "Panel":
        """``frame`` as a table of text: times in ``zone`` (UTC on hover), "—" for what is
        missing. ``ids`` name the rows (a selectable table reports them); a column in
        ``short_ids`` is drawn narrow, its ids cut (the whole id on hover and when
        copied). ``empty`` is said when there is no row ("" says nothing). ``name`` marks
        the table in the page (``data-table``), for browser tests to find it. Times are
        written with ``time_format`` (``TABLE_TIME`` drops the year and the zone, which
        the hover text keeps)."""
        columns = [str(c) for c in frame.columns]
        rows = [[_colored(_cell(value, zone, column in short_ids, time_format), column)
                 for column, value in zip(columns, row)]
                for row in frame.itertuples(index=False, name=None)]
        return self._add("table", columns=[_header(c) for c in columns], rows=rows,
                         widths=[(widths or {}).get(c) for c in columns], empty=empty,
                         ids=list(ids) if ids is not None else None, selectable=selectable,
                         name=name)

    def figure(self, figure: Any) -> "Panel":
        """A Plotly figure, drawn in the browser with Plotly: a spec of plain dicts
        (console/charts.py), or a ``go.Figure``."""
        if isinstance(figure, dict):
            return self._add("figure", figure=browser_spec(figure))
        return self._add("figure", figure=json.loads(figure.to_json()))

    def row(self, *panels: "Panel") -> "Panel":
        """Panels side by side, in equal columns (one under the other when narrow)."""
        return self._add("row", columns=[p.blocks for p in panels])

    def to_dict(self) -> dict[str, Any]:
        """The panel as the browser gets it."""
        return {"blocks": self.blocks}

    def _add(self, kind: str, **fields: Any) -> "Panel":
        self.blocks.append({"kind": kind, **fields})
        return self


def _part(part: str | tuple[str, bool]) -> dict[str, Any]:
    if isinstance(part, tuple):
        return {"text": str(part[0]), "strong": bool(part[1])}
    return {"text": str(part), "strong": False}


def _header(column: str) -> str:
    # Tables made for st.dataframe name their time columns "... (UTC)"; here a time is
    # shown in the operator's zone, with UTC on hover.
    return column.removesuffix(" (UTC)")


def _cell(value: Any, zone: tzinfo, short: bool, time_format: str) -> str | dict[str, Any]:
    """A table cell: text, or ``{"text", "title"...}`` when it has hover text."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return EMPTY
    if isinstance(value, pd.Timestamp) or (hasattr(value, "tzinfo") and hasattr(value, "year")):
        text = local_text(value, zone, time_format=time_format)
        return {"text": text, "title": f"{local_text(value, zone)} · {utc_text(value)}"} \
            if text != EMPTY else EMPTY
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    if short and len(text) > 12:
        # The whole id, drawn cut to its first characters: copying the cell or finding
        # it on the page still gets all of it.
        return {"text": text, "title": text, "short": True}
    return text


def _colored(cell: str | dict[str, str], column: str) -> str | dict[str, str]:
    """A status cell ("● failed") with its status's colour, as the console's tables show it."""
    colors = STATUS_COLUMNS.get(column)
    word = (cell["text"] if isinstance(cell, dict) else cell).split(" ")[-1]
    if not colors or word not in colors:
        return cell
    cell = dict(cell) if isinstance(cell, dict) else {"text": cell}
    return {**cell, "color": TEXT_HEX.get(colors[word], "")}


def panel_values(panel: dict[str, Any]) -> dict[str, str]:
    """Every card's ``label -> value`` in a panel dict (for tests and the counts check)."""
    values: dict[str, str] = {}
    for block in walk_blocks(panel.get("blocks", [])):
        if block["kind"] == "metrics":
            values.update({cell["label"]: cell["value"] for cell in block["cells"]})
    return values


def panel_text(panel: dict[str, Any]) -> str:
    """Every piece of text in a panel dict, one per line (bold parts between ``**``)."""
    lines: list[str] = []
    for block in walk_blocks(panel.get("blocks", [])):
        kind = block["kind"]
        if kind == "heading":       # bold as Markdown writes it, so text checks read alike
            lines.append(f"**{block['title']}**" + (f" · {block['note']}" if block["note"] else ""))
        elif kind == "line":
            lines.append("".join(f"**{part['text']}**" if part["strong"] else part["text"]
                                 for part in block["parts"]))
        elif kind in ("caption", "warning"):
            lines.append(block["text"])
        elif kind == "metrics":
            lines.extend(f"{cell['label']} {cell['value']}" for cell in block["cells"])
        elif kind == "table" and not block["rows"]:
            lines.append(block["empty"])
        elif kind == "table":
            lines.append(" | ".join(block["columns"]))
            lines.extend(" | ".join(c["text"] if isinstance(c, dict) else c for c in row)
                         for row in block["rows"])
    return "\n".join(lines)


def walk_blocks(blocks: list[dict[str, Any]]):
    """Every block of ``blocks``, those inside rows included, in drawing order."""
    for block in blocks:
        if block["kind"] == "row":
            for column in block["columns"]:
                yield from walk_blocks(column)
        else:
            yield block
