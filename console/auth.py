"""The console's password check, kept free of Streamlit so it can be tested on its own."""
from __future__ import annotations

import hashlib
import hmac


def password_matches(given: str | None, expected: str | None) -> bool:
    """Whether ``given`` is the console password, compared in constant time (a plain
    ``==`` leaks, through its timing, how many leading characters were right)."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def fingerprint(password: str) -> str:
    """A one-way token of the password, kept in the session after sign-in so that a
    changed password signs every session out (the password itself is never stored)."""
    return hashlib.sha256(b"agent-task-queue-console:" + password.encode("utf-8")).hexdigest()
