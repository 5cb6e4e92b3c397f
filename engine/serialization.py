"""JSON in and out of Redis, in one place. Never pickle: a queue whose payloads can run
code when loaded is a remote-code-execution hole for anyone who can write to Redis."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from .errors import PayloadTooLarge, ValidationError

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dumps(value: Any, what: str = "payload", limit: int | None = None) -> str:
    """Strict JSON text of ``value`` (no NaN/Infinity, which other JSON readers reject),
    checked to be writable as UTF-8 (no lone surrogates) and against ``limit`` bytes.
    Every refusal is a :class:`ValidationError` naming ``what``."""
    try:
        text = _encoder.encode(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} is not JSON-serialisable: {_short(exc)}") from None
    except RecursionError:
        raise ValidationError(f"{what} is nested too deeply to be JSON") from None
    size = len(text)
    if not text.isascii():      # ASCII text is its own UTF-8; anything else is measured
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValidationError(f"{what} holds text that is not valid Unicode (a lone "
                                  "surrogate): it cannot be written as UTF-8") from None
    if limit is not None and size > limit:
        raise PayloadTooLarge(f"{what} is {size:,} bytes, over the limit of {limit:,} bytes")
    return text


def _short(exc: Exception, width: int = 200) -> str:
    """An encoder's message, cut short (it can quote the whole offending value)."""
    text = str(exc)
    return text if len(text) <= width else text[:width - 3] + "..."


def fingerprint(value: Any) -> str:
    """A short digest of a JSON value, equal for equal values whatever their dicts' key
    order (16 hex digits)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def loads(text: str | bytes | None, default: Any = None) -> Any:
    """Parse JSON text from Redis (``default`` for a missing value)."""
    if text is None or text == "":
        return default
    return json.loads(text)
