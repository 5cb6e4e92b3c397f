"""The rules every value from a caller passes before the engine writes it, in one place.

Each check raises :class:`ValidationError` (a ``ValueError``) whose message starts with the
name of the field, and returns the value to use. The limits are the documented ones
(README, "Python API"; docs/ARCHITECTURE.md, "Input limits"):

- ids (task, parent and worker ids) and task type names: 1-128 characters of ASCII
  letters, digits and ``_ . : -``, starting with a letter or a digit. They become part of
  Redis key names and of the console's URLs, so nothing that means something there
  (braces, ``*``, ``/``, spaces, quotes) gets in.
- free text (session ids, idempotency keys, worker names): 1-256 characters of valid
  Unicode with no control characters (a session id is at most 200, as the console's
  form allows).
- numbers: real, finite, within the bounds below; ``bool`` is not a number here.
- payloads: a dict with text keys, of strict JSON (no NaN or infinity), at most
  ``MAX_PAYLOAD_DEPTH`` containers deep, whose text is valid Unicode without NUL, within
  ``QUEUE_MAX_PAYLOAD_BYTES`` once encoded.

The checks are written for the submit path, which runs them on every task: the common
case (an id generated here, defaults left alone, a flat payload) costs a few hundred ns.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Iterable

from . import clock
from .errors import ValidationError
from .serialization import dumps

MAX_ID_CHARS = 128
MAX_TEXT_CHARS = 256
MAX_SESSION_CHARS = 200
MAX_RETRIES = 1000
MAX_DELAY_SECONDS = 366 * 86400           # delay, run_at ahead, retry_delay, max_retry_delay
MAX_TIMEOUT_SECONDS = 7 * 86400
MAX_PAYLOAD_DEPTH = 32                    # the payload dict itself is depth 1

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,%d}" % (MAX_ID_CHARS - 1))
_ID_MATCH = _ID.fullmatch
ID_RULE = f"1-{MAX_ID_CHARS} letters, digits or '_.:-', starting with a letter or digit"
# Control characters (C0, DEL, C1) and lone surrogates (which no UTF-8 encoder accepts).
_BAD_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def shown(value: Any, width: int = 60) -> str:
    """``repr(value)`` cut to ``width`` characters: error messages never carry a whole
    megabyte of the bad input back (nor fail on a value too deep to repr)."""
    try:
        text = repr(value)
    except Exception:  # RecursionError, or a __repr__ of the caller's that raises
        return f"a {type(value).__name__} that cannot be shown"
    return text if len(text) <= width else text[:width - 3] + "..."


def check_id(value: Any, field: str = "task_id") -> str:
    """An id (task, parent or worker): see the module's rules."""
    if is_valid_id(value):
        return value
    raise ValidationError(f"{field} must be {ID_RULE}, got {shown(value)}")


def check_ids(values: Any, field: str = "task_ids") -> list[str]:
    """A list (or other iterable, not a single string) of ids, each checked."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValidationError(f"{field} must be a list of ids, got {shown(values)}")
    return [check_id(value, field) for value in values]


def is_valid_id(value: Any) -> bool:
    """Whether ``value`` would pass :func:`check_id` (for callers that try a string as an
    id before treating it as something else, e.g. a search box)."""
    return isinstance(value, str) and _ID_MATCH(value) is not None


def check_type_name(value: Any) -> str:
    """A task type name (surrounding spaces are dropped): the id rules."""
    if type(value) is str:
        name = checked_type_names.get(value)
        if name is not None:
            return name
    if isinstance(value, str):
        name = value.strip()
        if _ID.fullmatch(name):
            if type(value) is str and len(checked_type_names) < 4096:
                checked_type_names[value] = name
            return name
    raise ValidationError(f"task_type must be a TaskType or a task type name of {ID_RULE}, "
                          f"got {shown(value)}")


# Type names already checked, as given → as stored: a program uses a handful, and every
# task it submits checks its own (bounded, so a stream of distinct names cannot grow it).
checked_type_names: dict[str, str] = {}


def check_text(value: Any, field: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Free text: 1-``limit`` characters, valid Unicode, no control characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise ValidationError(f"{field} must be text of 1-{limit} characters, got {shown(value)}")
    if _BAD_TEXT.search(value):
        raise ValidationError(f"{field} must not hold control characters (NUL, newline...) "
                              f"or lone surrogates, got {shown(value)}")
    return value


def check_count(value: Any, field: str, high: int) -> int:
    """A whole number from 0 to ``high``."""
    if (type(value) is int or (isinstance(value, int) and not isinstance(value, bool))) \
            and 0 <= value <= high:
        return value
    raise ValidationError(f"{field} must be a whole number from 0 to {high:,}, got {shown(value)}")


def check_seconds(value: Any, field: str, high: float, *, zero: bool = True) -> float:
    """A finite number of seconds from 0 (or above 0 when ``zero`` is False) to ``high``.
    The comparisons refuse NaN and infinity as well."""
    if type(value) in (int, float) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        if (0 <= value if zero else 0 < value) and value <= high:
            return value
    low = "from 0" if zero else "above 0 and"
    raise ValidationError(f"{field} must be a number of seconds {low} up to {high:,.0f}, "
                          f"got {shown(value)}")


def check_fraction(value: Any, field: str = "fraction") -> float:
    """A finite number from 0 to 1 (a task's progress); not a bool."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    raise ValidationError(f"{field} must be a number from 0 to 1, got {shown(value)}")


def check_run_at(value: Any, now_ms: int | None = None) -> int:
    """A due time (a datetime; naive means local time) from 1970 up to
    ``MAX_DELAY_SECONDS`` ahead; returns it in epoch ms. A past time means "now"."""
    if not isinstance(value, datetime):
        raise ValidationError(f"run_at must be a datetime, got {shown(value)}")
    try:
        ms = clock.to_ms(value)
    except (OverflowError, ValueError, OSError, TypeError):   # TypeError: a tzinfo that lies
        ms = -1
    latest = (clock.now_ms() if now_ms is None else now_ms) + MAX_DELAY_SECONDS * 1000
    if not 0 <= ms <= latest:
        raise ValidationError(f"run_at must be between 1970 and {MAX_DELAY_SECONDS // 86400} "
                              f"days from now, got {shown(value)}")
    return ms


def payload_json(payload: Any, limit: int | None, field: str = "payload") -> str:
    """The payload as strict JSON text, checked: a dict with text keys, at most
    ``MAX_PAYLOAD_DEPTH`` deep, no NUL, valid Unicode, within ``limit`` bytes."""
    if not isinstance(payload, dict):
        raise ValidationError(f"{field} must be a dict, got {type(payload).__name__}")
    text = dumps(payload, field, limit)
    # Cheap tests on the text pick the payloads that need the full walk: with a second
    # container there may be nesting (and non-text keys inside); a NUL in a string is
    # written as \u0000 (a false alarm when the text itself spells it is settled by the walk).
    if "[" in text or text.find("{", 1) >= 0 or "\\u0000" in text:
        _walk(payload, field)
    else:
        for key in payload:
            if type(key) is not str and not isinstance(key, str):
                raise ValidationError(f"{field} keys must be text, got {shown(key)}")
    return text


def _walk(payload: dict, field: str) -> None:
    try:
        _check_tree(payload, 1)
    except _Bad as bad:
        where = field + "".join(f"[{step!r}]" for step in reversed(bad.path))
        raise ValidationError(f"{where}: {bad.reason}") from None


class _Bad(Exception):
    """A refusal deep in a payload; the path is filled in on the way out."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
        self.path: list[Any] = []


def _check_tree(value: Any, depth: int) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise _Bad("text must not hold NUL characters")
        return
    if isinstance(value, dict):
        items: Iterable = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return
    if depth > MAX_PAYLOAD_DEPTH:
        raise _Bad(f"nested more than {MAX_PAYLOAD_DEPTH} levels deep")
    for key, item in items:
        try:
            if isinstance(value, dict):
                if not isinstance(key, str):
                    raise _Bad(f"keys must be text, got {shown(key)}")
                if "\x00" in key:
                    raise _Bad("keys must not hold NUL characters")
            _check_tree(item, depth + 1)
        except _Bad as bad:
            bad.path.append(key)
            raise

