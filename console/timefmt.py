"""Times as the operator reads them: in the browser's time zone, with UTC at hand.

The engine stores UTC; an operator thinks in local time. Every time the console writes
as text goes through :func:`local_text` (with :func:`utc_text` for the hover help), and
tables convert their time columns with :func:`local_frame_times`. Empty times read
"never" or "—", never ``None``.
"""
from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

EMPTY = "—"


def operator_zone() -> tzinfo:
    """The browser's time zone (``st.context.timezone``), UTC when it is unknown (no
    browser, as under AppTest) or not a zone this server knows."""
    try:
        import streamlit as st
        name = st.context.timezone
    except Exception:       # outside a Streamlit run
        name = None
    if not name:
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc


def zone_label(zone: tzinfo) -> str:
    """``"Europe/Paris"``, or ``"UTC"``."""
    return getattr(zone, "key", None) or "UTC"


def _moment(value: Any) -> datetime | None:
    """An ISO string, a datetime, a pandas Timestamp or epoch ms as an aware datetime."""
    if value is None or value is pd.NaT or value == "" or (isinstance(value, float)
                                                           and value != value):
        return None
    try:
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
        if isinstance(value, pd.Timestamp):
            if pd.isna(value):
                return None
            value = value.to_pydatetime()
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return None


def local_text(value: Any, zone: tzinfo | None = None, empty: str = EMPTY,
               time_format: str = "%Y-%m-%d %H:%M:%S %Z") -> str:
    """``"2026-11-30 14:03:05 CET"`` in ``zone`` (default: the operator's); ``empty`` when
    there is no time; ``time_format`` for another layout (strftime)."""
    moment = _moment(value)
    if moment is None:
        return empty
    zone = zone or operator_zone()
    return moment.astimezone(zone).strftime(time_format)


def time_of_day(value: Any, zone: tzinfo | None = None) -> str:
    """``"14:03:05 CET"``."""
    moment = _moment(value)
    if moment is None:
        return EMPTY
    return moment.astimezone(zone or operator_zone()).strftime("%H:%M:%S %Z")


def utc_text(value: Any, empty: str = EMPTY) -> str:
    """``"2026-11-30 13:03:05 UTC"``: the stored time, for hover help."""
    moment = _moment(value)
    return empty if moment is None else moment.astimezone(timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def local_frame_times(frame: pd.DataFrame, columns: list[str], zone: tzinfo) -> pd.DataFrame:
    """``frame`` with its UTC time ``columns`` moved to ``zone`` (a table shows a
    timestamp's own zone); missing times stay empty."""
    for column in columns:
        if column in frame.columns:
            values = pd.to_datetime(frame[column], utc=True, errors="coerce")
            frame[column] = values.dt.tz_convert(zone_label(zone) if zone is not timezone.utc
                                                 else "UTC")
    return frame
