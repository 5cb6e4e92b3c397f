"""The one place the engine reads the clock.

Task state that many machines share (lease deadlines, due times, status scores) is
stamped by Redis ``TIME`` inside the Lua scripts, never by a client's clock: workers on
different hosts disagree about the time. This module serves everything else (log lines,
worker uptime, client-side timeouts) and converts between the engine's two units:
integer epoch milliseconds (what Redis stores) and timezone-aware datetimes (what users
see). Tests replace :func:`now_ms` / :func:`monotonic` here, in one place.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone


def now_ms() -> int:
    """Current wall-clock time of this process, in epoch milliseconds."""
    return int(time.time() * 1000)


def monotonic() -> float:
    """Seconds on a clock that never goes backwards, for measuring intervals."""
    return time.monotonic()


def monotonic_ns() -> int:
    """Nanoseconds on a clock that never goes backwards: for waits of microseconds."""
    return time.perf_counter_ns()


def to_iso(ms: int | float | str | None) -> str | None:
    """Epoch milliseconds → ISO-8601 string in UTC (``None`` stays ``None``)."""
    if ms in (None, ""):
        return None
    return datetime.fromtimestamp(int(float(ms)) / 1000, tz=timezone.utc).isoformat(
        timespec="milliseconds")


def to_ms(moment: datetime) -> int:
    """A datetime → epoch milliseconds. A naive datetime is taken as local time,
    as the guide's ``datetime.now().replace(hour=9)`` examples expect."""
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return int(moment.timestamp() * 1000)


class FixedClock:
    """A clock for tests: the engine passes ``clock.now_ms()`` to its scripts instead of
    letting Redis read ``TIME``, so a test can move time with :meth:`advance`."""

    def __init__(self, start_ms: int = 1_800_000_000_000):
        self.ms = int(start_ms)

    def now_ms(self) -> int:
        """The frozen time."""
        return self.ms

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.ms += int(seconds * 1000)
