"""Encryption at rest of payloads and results (optional): Fernet from ``cryptography``.

``QUEUE_ENCRYPTION_KEYS`` holds one or more Fernet keys, comma-separated (make one with
``python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"``).
The first key encrypts; every key decrypts (``MultiFernet``), so a key is rotated by
putting the new one first and keeping the old ones until nothing written with them is
left (results expire after ``QUEUE_RESULT_TTL`` / ``QUEUE_FAILED_TTL``).

What is encrypted: a task's payload (the ``payload`` field of its hash) and the ``result``
value inside its result document. What is not: ids, types, statuses, times, error
messages, tracebacks, events, and the task templates of recurring schedules. An encrypted
value is text that starts with :data:`PREFIX`, so plaintext written before encryption was
turned on still reads as before.

A process without the key reads an encrypted payload as :data:`ENCRYPTED_PAYLOAD` and an
encrypted result as :data:`ENCRYPTED_RESULT` (the console shows "encrypted"; its CSV
exports carry the marker, never the ciphertext nor a guess); a worker without the key
dead-letters the task as a corrupt record naming the payload.

With no keys configured nothing here runs on the hot paths: the queue's and the worker's
hooks test ``sealer is not None`` (engine/queue.py ``_row``, engine/worker.py ``_hold``
and ``_execute``).
"""
from __future__ import annotations

import functools
import threading
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .errors import ConfigurationError, CorruptRecord
from .serialization import dumps, loads

PREFIX = "enc:1:"
ENCRYPTED_PAYLOAD = {"encrypted": "payload encrypted; this process has no key for it"}
ENCRYPTED_RESULT = "encrypted (this process has no key for it)"

_lock = threading.Lock()
_known_keys: list[bytes] = []          # every key any queue of this process was given
_reader: MultiFernet | None = None     # decrypts with all of them


class Undecryptable(ValueError):
    """An encrypted value that none of this process's keys opens."""


def parse_keys(text: str) -> list[bytes]:
    """The keys of ``QUEUE_ENCRYPTION_KEYS``; a malformed one is a ConfigurationError that
    says which (by position, never by value)."""
    keys = [part.strip().encode() for part in text.split(",") if part.strip()]
    if not keys:
        raise ConfigurationError("QUEUE_ENCRYPTION_KEYS is set but holds no key")
    for position, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ConfigurationError(
                f"QUEUE_ENCRYPTION_KEYS: key {position} is not a Fernet key (32 url-safe "
                "base64-encoded bytes; make one with cryptography's Fernet.generate_key())") from None
    return keys


class Sealer:
    """Encrypts with the first key, decrypts with any."""

    def __init__(self, keys: list[bytes]):
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def seal(self, text: str) -> str:
        """``text`` encrypted, as text with the PREFIX."""
        return PREFIX + self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def open(self, text: str) -> str:
        """The plaintext of a sealed value (plaintext passes unchanged)."""
        if not text.startswith(PREFIX):
            return text
        try:
            return self._fernet.decrypt(text[len(PREFIX):].encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            raise Undecryptable("encrypted with a key this process does not have") from None

    def seal_value(self, value: Any, what: str = "result", limit: int | None = None) -> str:
        """A JSON value (a handler's result) encrypted; the size limit applies to its JSON."""
        return self.seal(dumps(value, what, limit))


@functools.lru_cache(maxsize=16)
def _sealer(keys_text: str) -> Sealer:
    keys = parse_keys(keys_text)
    global _reader
    with _lock:
        for key in keys:
            if key not in _known_keys:
                _known_keys.append(key)
        _reader = MultiFernet([Fernet(key) for key in _known_keys])
    return Sealer(keys)


def sealer_for(settings: Any) -> Sealer | None:
    """The sealer of ``settings`` (None when encryption is off). Its keys also join the
    ones this process decrypts with, for readers that have no settings at hand."""
    keys = getattr(settings, "encryption_keys", None)
    return _sealer(keys) if keys else None


def open_text(text: str) -> str:
    """A stored value in plaintext, with any key this process knows. Raises Undecryptable."""
    if not text.startswith(PREFIX):
        return text
    if _reader is None:
        raise Undecryptable("encrypted, and this process has no key")
    try:
        return _reader.decrypt(text[len(PREFIX):].encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):
        raise Undecryptable("encrypted with a key this process does not have") from None


def open_claimed_payload(sealer: Sealer, text: str) -> str:
    """A claimed task's payload in plaintext, for the worker; a payload no key opens makes
    the task a corrupt record (dead-lettered with this reason, never run with garbage)."""
    try:
        return sealer.open(text)
    except Undecryptable:
        raise CorruptRecord("corrupt record: payload (encrypted with a key this worker does "
                            "not have: check QUEUE_ENCRYPTION_KEYS)") from None


def load_payload(text: str | None, default: Any = None) -> Any:
    """A stored payload parsed (``default`` when missing); the ENCRYPTED_PAYLOAD marker
    when no key of this process opens it."""
    if text and text.startswith(PREFIX):
        try:
            text = open_text(text)
        except Undecryptable:
            return dict(ENCRYPTED_PAYLOAD)
    return loads(text, default)


def open_result(doc: Any) -> Any:
    """A parsed result document with its ``result`` decrypted in place (or replaced by
    ENCRYPTED_RESULT when no key opens it)."""
    if isinstance(doc, dict):
        value = doc.get("result")
        if isinstance(value, str) and value.startswith(PREFIX):
            try:
                doc["result"] = loads(open_text(value))
            except Undecryptable:
                doc["result"] = ENCRYPTED_RESULT
    return doc
