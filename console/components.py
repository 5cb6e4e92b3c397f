"""Small Streamlit building blocks the pages share: live fragments, selectable live
tables with coloured statuses, flash messages, a guard that turns a Redis outage into a
warning, and the generation counters that make each submit form send once."""
from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence

import pandas as pd
import pyarrow as pa
import redis
import streamlit as st
from streamlit.errors import StreamlitAPIException

from engine import QueueError

from . import registry
from .forms import idempotency_key
from .text import md
from .theme import STATUS_COLOR, STATUS_COLUMNS, TEXT_HEX, status_label

REDIS_DOWN = (redis.RedisError, QueueError, OSError)


def live(body: Callable[..., Any], *args: Any, seconds: float | None) -> None:
    """Run ``body(*args)`` as a fragment that reruns on its own every ``seconds``.

    A fragment reruns only itself, so a tick costs just the Redis reads inside ``body``
    (streamlit-autorefresh would rerun the whole page). ``seconds`` None or 0: static.
    """
    st.fragment(run_every=seconds or None)(body)(*args)


@contextlib.contextmanager
def redis_guard(what: str = "the queue") -> Iterator[None]:
    """Show a warning instead of a traceback when Redis does not answer; live parts
    simply try again at their next tick."""
    try:
        yield
    except REDIS_DOWN as exc:
        st.warning(f"Could not read {what}: Redis did not answer ({type(exc).__name__}: "
                   f"{md(short_error(exc))}). Retrying on the next refresh.", icon=":material/warning:")


def updated_caption(prefix: str = "Updated") -> None:
    """A small "Updated 12:00:03 UTC" line, so operators see the data is live."""
    st.caption(f"{prefix} {datetime.now(timezone.utc):%H:%M:%S} UTC")


TOAST_ICONS = {"success": ":material/check_circle:", "warning": ":material/warning:",
               "error": ":material/error:"}


def flash(key: str, level: str, text: str) -> None:
    """Answer an action: a toast at the next run (where the operator is looking, even
    scrolled down), and a line that :func:`show_flash` keeps showing under ``key``, with
    the time, until the next action there (callbacks cannot draw: they run before the
    page). A live refresh does not wipe it."""
    st.session_state[f"{key}__flash"] = (level, text, clock_text())
    st.session_state.setdefault("console__toasts", []).append((level, text))


def flash_message(key: str) -> tuple[str, str, str] | None:
    """The last answer :func:`flash` left under ``key``: ``(level, text, when)``."""
    return st.session_state.get(f"{key}__flash")


def show_toasts() -> None:
    """Show (once) the toasts that actions left; called by the frame on every page run."""
    for level, text in st.session_state.pop("console__toasts", []):
        st.toast(md(text, 300), icon=TOAST_ICONS.get(level))


def show_flash(key: str) -> None:
    """Show the last answer :func:`flash` left for ``key``, with when it came; it stays
    until the next action. The message is drawn as text: it carries task ids, names and
    the engine's reasons."""
    message = flash_message(key)
    if message:
        level, text, when = message
        {"success": st.success, "warning": st.warning, "error": st.error}.get(level, st.info)(
            f"{md(text)} ({when})")


def clock_text() -> str:
    """Now, as the operator reads it: ``"14:03:05 CET"`` in their time zone."""
    from .timefmt import operator_zone, time_of_day
    return time_of_day(datetime.now(timezone.utc), operator_zone())


def table_key(key: str) -> str:
    """The current widget key of a selectable table (it changes to clear the selection)."""
    return f"{key}_table_{st.session_state.get(f'{key}__generation', 0)}"


def selected_rows(key: str) -> list[int]:
    """Row positions currently selected in the table ``key``."""
    state = st.session_state.get(table_key(key))
    try:
        return list(state["selection"]["rows"])
    except (KeyError, TypeError):
        return []


def turn_page(key: str, step: int) -> None:
    """Move the paged table ``key`` by ``step`` pages (never before the first) and drop
    its row selection, which would otherwise point at other tasks on the new page."""
    st.session_state[f"{key}_page"] = max(0, st.session_state.get(f"{key}_page", 0) + step)
    clear_selection(key)


def selection_header(count: int, paused: bool, key: str | None = None) -> None:
    """The first line of a selection bar: how many rows, and since when the table waits."""
    since = st.session_state.get(f"{key}__paused_since") if key else None
    st.markdown(f"**{count} selected**" + (
        f" · table paused since {since} while rows are selected (clear the selection to "
        "resume)" if paused and since else
        " · table paused while rows are selected" if paused else ""))


def run_action(queue: Any, key: str, action: str, task_ids: Sequence[str], **options: Any) -> Any:
    """Apply ``action`` to the tasks (see console.actions); on a Redis outage, say under
    ``key`` that nothing changed and return None."""
    from .actions import apply_action   # console.actions imports nothing of Streamlit
    from .shared import queue_changed
    from .timefmt import operator_zone
    try:
        report = apply_action(queue, action, task_ids, zone=operator_zone(), **options)
    except REDIS_DOWN as exc:
        flash(key, "error", f"Nothing was changed: Redis did not answer ({exc}).")
        return None
    queue_changed(queue)        # every session's next read shows the engine's answer
    return report


def clear_selection(key: str) -> None:
    """Drop the table's selection (a fresh widget key: selection state cannot be
    written back to a dataframe)."""
    st.session_state[f"{key}__generation"] = st.session_state.get(f"{key}__generation", 0) + 1
    st.session_state.pop(f"{key}__selected", None)     # a live panel's ticked rows


@dataclass(frozen=True)
class TableView:
    """A table ready to draw: the ``data`` it shows (a page of records...), its rows as
    an Arrow table with times in the operator's zone, and its column settings."""

    data: Any
    table: Any                  # a pyarrow Table (a pandas frame when Arrow could not type it)
    column_config: dict
    column_order: list | None

    @property
    def rows(self) -> int:
        """How many rows the table has."""
        return len(self.table)


def table_view(data: Any, frame: pd.DataFrame, column_config: dict | None = None,
               column_order: Sequence[str] | None = None,
               short_ids: Sequence[str] = ()) -> TableView:
    """``frame`` (showing ``data``) as it is drawn: times in the operator's zone
    (:func:`local_times`), statuses coloured and ``short_ids`` narrow (:func:`table_config`)."""
    frame, column_config, column_order = local_times(frame, column_config, column_order)
    column_config = table_config(frame, column_config, short_ids)
    try:
        table: Any = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        table = frame       # a column Arrow cannot type (mixed values): Streamlit mends it
    return TableView(data, table, column_config, column_order)


def selectable_table(key: str, fetch: Callable[[], Any], to_frame: Callable[[Any], Any], *,
                     column_config: dict | None = None, column_order: Sequence[str] | None = None,
                     short_ids: Sequence[str] = (),
                     height: int | str = "auto") -> tuple[Any, list[int], bool]:
    """A live table whose rows can be selected: ``(data, selected positions, paused)``.

    While rows are selected the table keeps the rows it showed (no Redis read), so a
    refresh can never move the selection onto other tasks; clearing the selection
    resumes live updates. Statuses are coloured and ``short_ids`` columns narrow
    (see :func:`table_config`).
    """
    rows = selected_rows(key)
    snapshot_key = f"{key}__snapshot"
    paused = bool(rows) and snapshot_key in st.session_state
    data = st.session_state[snapshot_key] if paused else fetch()
    st.session_state[snapshot_key] = data
    if not paused:
        st.session_state[f"{key}__paused_since"] = clock_text()   # the rows shown are this fresh
    view = table_view(data, to_frame(data), column_config, column_order, short_ids)
    st.dataframe(view.table, key=table_key(key), on_select="rerun",
                 selection_mode="multi-row", hide_index=True, column_config=view.column_config,
                 column_order=view.column_order, width="stretch", height=height)
    return view.data, [r for r in rows if r < view.rows], paused


def page_link(key: str, label: str, icon: str | None = None,
              query_params: dict[str, str] | None = None) -> None:
    """A link to the page registered as ``key`` (console/registry.py; an unknown key is a
    KeyError). Left out, rather than failing the page, only when Streamlit does not serve
    the target (a page file run on its own, as in some tests)."""
    target = registry.page(key)
    try:
        st.page_link(target.path, label=label, icon=icon, query_params=query_params)
    except StreamlitAPIException:
        pass


def plain_table(key: str, frame: Any, *, short_ids: Sequence[str] = (), **kwargs: Any) -> None:
    """A read-only table inside a container keyed ``key``: the key finds it in tests and
    becomes a CSS class (``st-key-<key>``) for browser tests. Statuses are coloured and
    ``short_ids`` columns narrow (see :func:`table_config`)."""
    frame, kwargs["column_config"], order = local_times(frame, kwargs.get("column_config"),
                                                        kwargs.get("column_order"))
    if order is not None:
        kwargs["column_order"] = order
    kwargs["column_config"] = table_config(frame, kwargs["column_config"], short_ids)
    with st.container(key=key):
        st.dataframe(frame, hide_index=True, width="stretch", **kwargs)


UTC_SUFFIX = " (UTC)"
DEFAULT_TIME_FORMAT = "YYYY-MM-DD HH:mm:ss"


def local_times(frame: pd.DataFrame, column_config: dict | None,
                column_order: Sequence[str] | None) -> tuple[pd.DataFrame, dict, list | None]:
    """Show a table's UTC time columns (named ``"... (UTC)"`` by console.data) in the
    operator's time zone: the column loses its suffix, its times are converted, and its
    header's help names the zone (UTC is what is stored)."""
    from .timefmt import local_frame_times, operator_zone, zone_label

    config = dict(column_config or {})
    names = [c for c in frame.columns if str(c).endswith(UTC_SUFFIX)]
    if not names:
        return frame, config, list(column_order) if column_order is not None else None
    zone = operator_zone()
    renamed = {c: c[:-len(UTC_SUFFIX)] for c in names}
    frame = local_frame_times(frame.copy(), names, zone).rename(columns=renamed)
    for old, new in renamed.items():
        given = config.pop(old, None)
        fmt = DEFAULT_TIME_FORMAT
        width = label = None
        if given is not None:
            fmt = given.get("type_config", {}).get("format") or fmt
            width, label = given.get("width"), given.get("label")
        config[new] = st.column_config.DatetimeColumn(
            label, format=fmt, width=width,
            help=f"In your time zone, {zone_label(zone)} (stored as UTC).")
    order = [renamed.get(c, c) for c in column_order] if column_order is not None else None
    return frame, config, order


# -- table styling -----------------------------------------------------------------------------
SHORT_ID_WIDTH = 112      # px: an id column shows the first ~12 characters; the cell keeps all


def table_config(frame: pd.DataFrame, column_config: dict | None,
                 short_ids: Sequence[str] = ()) -> dict:
    """``column_config`` completed for ``frame``: each status column (``STATUS_COLUMNS``)
    drawn as coloured labels, each ``short_ids`` column narrow. Only the drawing changes:
    the cells keep their values ("● failed", the whole id), so sorting, copying, the
    browser's accessible copy of the grid and tests all see them.

    The colours come from the grid itself (a read-only multiselect column whose options
    are the status labels), not from a pandas Styler: a Styler formats every cell of the
    table on every refresh of every open page, three quarters of a Tasks page's run.
    """
    config = dict(column_config or {})
    for column, colors in STATUS_COLUMNS.items():
        if column in frame.columns and column not in config:
            labels = sorted(colors)
            config[column] = st.column_config.MultiselectColumn(
                options=[status_label(name) for name in labels],
                color=[TEXT_HEX[colors[name]] for name in labels], width=110)
    for column in short_ids:
        if column in frame.columns and column not in config:
            config[column] = st.column_config.TextColumn(width=SHORT_ID_WIDTH)
    return config


# -- submit forms that send once -------------------------------------------------------------------
def form_generation(key: str) -> int:
    """How many times the form ``key`` has submitted in this session. It is part of the
    form's submit-button key (and the uploader's, for a file) and of its idempotency key:
    a repeated click of the filled-in form (a double click, or a click sent again before
    the page redrew) names the same generation and is recognised; the emptied form that
    follows a success is a new generation, so sending the same text again on purpose
    makes a new task."""
    return int(st.session_state.get(f"{key}__generation_submitted", 0))


def next_form_generation(key: str) -> None:
    """Start the form's next generation (after a successful submit)."""
    st.session_state[f"{key}__generation_submitted"] = form_generation(key) + 1


def submission_key(kind: str, generation: int, *parts: Any) -> str:
    """The idempotency key of one submission of a form: ``kind``, this browser session,
    the form's ``generation`` and what was submitted (``parts``). The session is part of
    it so that another operator (or this one after a reload) sending the same text is a
    new submission, not the first one's."""
    session = st.session_state.setdefault("console__session_nonce", uuid.uuid4().hex)
    return idempotency_key(kind, session, generation, *parts)


def status_badge(status: str | None) -> None:
    """A coloured badge for a task status."""
    st.badge(status or "unknown", color=STATUS_COLOR.get(status or "", "gray"))


def short_error(exc: BaseException) -> str:
    """An exception's message, cut to 200 characters (a warning line, not a log)."""
    text = str(exc)
    return text if len(text) <= 200 else text[:199] + "…"


def facts(cells: Sequence[tuple[str, Any]], per_row: int | None = None) -> None:
    """Label-and-value pairs in columns, each value as text that wraps (a metric card
    cuts a long id or name to "agent_…"); empty values read "—"."""
    per_row = per_row or len(cells)
    for start in range(0, len(cells), per_row):
        row = cells[start:start + per_row]
        for column, (label, value) in zip(st.columns(per_row), row):
            column.caption(md(label))
            column.markdown(md(value if value not in (None, "") else "—"))
