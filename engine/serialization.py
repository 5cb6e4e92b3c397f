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
    checked against ``limit`` bytes."""
    try:
        text = _encoder.encode(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} is not JSON-serialisable: {exc}") from None
    if limit is not None and len(text) > limit // 4 and len(text.encode("utf-8")) > limit:
        raise PayloadTooLarge(f"{what} is {len(text.encode('utf-8')):,} bytes, over the "
                              f"limit of {limit:,} bytes")
    return text


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
