"""The console's password check and its sign-in throttle, kept free of Streamlit so they
can be tested on their own.

A wrong password costs a second, but parallel sessions made that nothing (12 sessions
got 12 guesses in 2 s). So attempts are counted in Redis, per client address and for
all addresses together, in fixed windows: an address past ``ADDRESS_LIMIT`` attempts, or
everyone once all addresses together pass ``GLOBAL_LIMIT``, is locked out until its
window ends. The attempt is counted (one atomic INCR) *before* the password is checked,
so parallel requests cannot all slip in before the first failure is recorded; a
successful sign-in gives its attempt back. Operators see a lockout on the sign-in page
(with the time left), in the server log, and with :meth:`LoginThrottle.lockouts` or
``redis-cli ZRANGE '{<namespace>}:login:locked' 0 -1`` (lift one with
:meth:`LoginThrottle.clear`, or DEL of ``{<namespace>}:login:attempts:<address>``).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any

from engine.keys import Keys

log = logging.getLogger("console.auth")

ADDRESS_LIMIT = 5          # attempts per client address per window
GLOBAL_LIMIT = 50          # attempts from all addresses together per window
WINDOW_SECONDS = 900       # 15 minutes
ALL = "*"                  # the scope of the global counter


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


@dataclass(frozen=True)
class LoginOutcome:
    """The answer to one sign-in attempt: ``ok``, or why not (``locked_for`` seconds)."""

    ok: bool
    message: str = ""
    locked_for: int = 0


@dataclass(frozen=True)
class Lockout:
    """A locked scope (a client address, or ``*`` for everyone) and its time left."""

    scope: str
    attempts: int
    seconds_left: int


class LoginThrottle:
    """Counts sign-in attempts in Redis and refuses them past the limits."""

    def __init__(self, client: Any, keys: Keys, address_limit: int = ADDRESS_LIMIT,
                 global_limit: int = GLOBAL_LIMIT, window: int = WINDOW_SECONDS):
        self.client, self.keys = client, keys
        self.address_limit, self.global_limit, self.window = address_limit, global_limit, window

    def attempt(self, given: str | None, password: str, address: str | None) -> LoginOutcome:
        """Count the attempt, then check the password unless a limit is passed."""
        address = address or "unknown"
        mine, everyone = self.keys.login_attempts(address), self.keys.login_attempts(ALL)
        pipe = self.client.pipeline(transaction=False)
        pipe.incr(mine)
        pipe.expire(mine, self.window, nx=True)
        pipe.incr(everyone)
        pipe.expire(everyone, self.window, nx=True)
        pipe.ttl(mine)
        pipe.ttl(everyone)
        count, _, total, _, mine_ttl, everyone_ttl = pipe.execute()
        if count > self.address_limit:
            if count == self.address_limit + 1:
                log.warning("console sign-in locked for client %s after %d attempts (%d s left)",
                            address, self.address_limit, mine_ttl)
                self._note_locked(address, mine_ttl)
            return self._locked(max(1, mine_ttl), "from this address")
        if total > self.global_limit:
            if total == self.global_limit + 1:
                log.warning("console sign-in locked for everyone after %d attempts from all "
                            "addresses (%d s left)", self.global_limit, everyone_ttl)
                self._note_locked(ALL, everyone_ttl)
            return self._locked(max(1, everyone_ttl), "from all addresses together")
        if password_matches(given, password):
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(mine)
            pipe.decr(everyone)
            pipe.execute()
            return LoginOutcome(ok=True)
        return LoginOutcome(ok=False, message="Wrong password.")

    def _locked(self, seconds: int, where: str) -> LoginOutcome:
        minutes = max(1, round(seconds / 60))
        return LoginOutcome(ok=False, locked_for=seconds, message=(
            f"Too many sign-in attempts {where}: signing in is locked for about {minutes} "
            "min. An operator can see and clear the lockout (docs/PRODUCTION.md)."))

    def _note_locked(self, scope: str, seconds: int) -> None:
        # Listed for lockouts() without SCAN, which the documented ACL user may not run.
        self.client.zadd(self.keys.login_locked, {scope: time.time() + max(1, seconds)})

    def lockouts(self) -> list[Lockout]:
        """Every scope currently locked out, with its attempts and time left."""
        now = time.time()
        self.client.zremrangebyscore(self.keys.login_locked, "-inf", now)
        scopes = self.client.zrangebyscore(self.keys.login_locked, now, "+inf")
        if not scopes:
            return []
        pipe = self.client.pipeline(transaction=False)
        for scope in scopes:
            pipe.get(self.keys.login_attempts(scope))
            pipe.ttl(self.keys.login_attempts(scope))
        replies = pipe.execute()
        found = [Lockout(scope, int(attempts), max(0, ttl))
                 for scope, attempts, ttl in zip(scopes, replies[::2], replies[1::2]) if attempts]
        return sorted(found, key=lambda lock: lock.scope)

    def clear(self, scope: str) -> bool:
        """Lift the lockout of one address (``*``: the global one)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.keys.login_attempts(scope))
        pipe.zrem(self.keys.login_locked, scope)
        return bool(pipe.execute()[0])
