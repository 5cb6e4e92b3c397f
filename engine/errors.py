"""The engine's error hierarchy, and the one table that maps Lua return codes to it.

Callers catch :class:`QueueError` (or a subclass) and never a redis-py exception:
driver errors are translated at the boundary (:func:`translate_redis_errors`).
"""
from __future__ import annotations

import redis


class QueueError(Exception):
    """Base class of every error the engine raises on purpose."""


class ConfigurationError(QueueError, ValueError):
    """A setting is unknown or malformed; raised at start-up."""


class ValidationError(QueueError, ValueError):
    """Bad input to a public verb; nothing was written."""


class PayloadTooLarge(ValidationError):
    """A payload or result is over the configured size limit."""


class TaskNotFound(QueueError, KeyError):
    """No task with that id (it never existed, or it expired)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else "task not found"


class ScheduleNotFound(QueueError, KeyError):
    """No recurring schedule with that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else "schedule not found"


class InvalidTransition(QueueError):
    """The task is not in a status that allows this verb (e.g. cancel a completed task)."""


class CorruptRecord(QueueError):
    """The stored record is not a task hash (a key of another type under the task's name):
    no verb but delete can act on it."""


class IdempotencyConflict(QueueError):
    """An idempotency key was reused for a task with different content. ``existing_id`` is
    the task the key already names; nothing was written for the new one."""

    def __init__(self, message: str, existing_id: str):
        super().__init__(message)
        self.existing_id = existing_id


class AccessDenied(QueueError, PermissionError):
    """The acting identity's role does not allow this verb (engine.access); nothing changed."""


class LeaseLost(QueueError):
    """A worker reported on a task whose lease it no longer holds (fencing token mismatch)."""


class QueueUnavailable(QueueError, ConnectionError):
    """Redis could not be reached."""


class RedisRefused(QueueUnavailable):
    """Redis answered but refused to write, for a reason that passes: out of memory
    (``maxmemory`` with ``noeviction``), a read-only replica (after a failover), a failed
    snapshot (``MISCONF``), a script running too long (``BUSY``), a replica cut off from
    its master. A script refused this way wrote nothing (Redis refuses at its first
    write); callers treat it like an outage and try again later."""


# Redis error codes whose refusal passes, and what to tell the operator. redis-py turns
# some into their own classes (message without the code), others into ResponseError
# (message starting with the code).
_REFUSALS: dict[str, str] = {
    "OOM": "Redis is out of memory (maxmemory reached) and refuses writes",
    "READONLY": "Redis is a read-only replica (a failover?) and refuses writes",
    "MISCONF": "Redis refuses writes because it cannot save its snapshot to disk (MISCONF)",
    "BUSY": "Redis is busy running a long script (BUSY)",
    "MASTERDOWN": "the Redis replica has lost its master (MASTERDOWN)",
}
_REFUSAL_CLASSES: dict[type, str] = {      # for redis-py versions without status_code
    redis.exceptions.OutOfMemoryError: "OOM",
    redis.exceptions.ReadOnlyError: "READONLY",
    redis.exceptions.MasterDownError: "MASTERDOWN",
}
# The refusals redis-py raises as classes of their own, for ``except`` clauses that meet
# them untranslated (the others arrive as RedisRefused or plain ResponseError).
REFUSAL_ERRORS: tuple[type, ...] = tuple(_REFUSAL_CLASSES)


# The states a Redis Cluster passes through when a master fails or slots move, all of which
# end by themselves (a replica is promoted, the master comes back, the reshard finishes):
# CLUSTERDOWN (every node says it while any slot is uncovered, MasterDownError included),
# TRYAGAIN, MOVED/ASK storms redis-py gives up on ("TTL exhausted", a ClusterError), and a
# slot the client's map does not cover.
CLUSTER_OUTAGE_ERRORS: tuple[type, ...] = (
    redis.exceptions.ClusterError, redis.exceptions.TryAgainError, redis.exceptions.AskError,
    redis.exceptions.SlotNotCoveredError)
# redis-py raises its bare RedisClusterException for these while it cannot read the
# cluster's layout (it also raises it for misuse, which must stay an error).
_CLUSTER_LAYOUT_UNREADABLE = ("Redis Cluster cannot be connected", "could not agree on a valid slots cache",
                              "All slots are not covered")


def cluster_outage(exc: BaseException) -> bool:
    """Whether ``exc`` is a Redis Cluster state that passes (see CLUSTER_OUTAGE_ERRORS)."""
    if isinstance(exc, CLUSTER_OUTAGE_ERRORS):
        return True
    return (isinstance(exc, redis.exceptions.RedisClusterException)
            and any(text in str(exc) for text in _CLUSTER_LAYOUT_UNREADABLE))


def refusal(exc: BaseException) -> RedisRefused | None:
    """The :class:`RedisRefused` that a Redis error reply stands for, or None when the
    reply is not a passing refusal (a script bug, a wrong type...)."""
    if not isinstance(exc, redis.ResponseError):
        return None
    code = (getattr(exc, "status_code", None) or _REFUSAL_CLASSES.get(type(exc))
            or str(exc).split(" ", 1)[0])
    message = _REFUSALS.get(code)
    return RedisRefused(message) if message else None


class TaskTimeout(QueueError, TimeoutError):
    """``wait_for_result`` gave up before the task finished."""


class NoHandler(QueueError):
    """A worker has no handler registered for the task's type."""


class PermanentError(QueueError):
    """Raised by a handler for a failure that retrying cannot fix (bad request, 4xx):
    the task fails at once, with no further attempts."""


class RetryableError(QueueError):
    """Raised by a handler for a passing failure; ``retry_after`` (seconds) overrides the
    task's retry delay, e.g. from a provider's Retry-After header."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    """Raised by a handler when a provider said "slow down" (HTTP 429). Not a failed
    attempt: the task waits, its attempt count unchanged, until ``retry_after`` seconds
    (or the key's pause) have passed, and the limit key is paused for every worker
    (engine/limits.py). ``limit_key`` names the key when the handler's type has none;
    ``signal`` is what the provider's headers said (engine.limits.ProviderSignal)."""

    def __init__(self, message: str, retry_after: float | None = None,
                 limit_key: str | None = None, signal: object = None):
        super().__init__(message, retry_after)
        self.limit_key = limit_key
        self.signal = signal


# Negative codes the Lua scripts return, in one place (each script's header names the
# ones it can return).
SCRIPT_ERRORS: dict[int, type[QueueError]] = {
    -1: TaskNotFound,
    -2: InvalidTransition,
    -3: LeaseLost,
    -4: CorruptRecord,
}


def raise_for_code(code: int, task_id: str, verb: str, status: str | None = None) -> None:
    """Raise the exception that a script's negative return ``code`` stands for."""
    if code >= 0:
        return
    error = SCRIPT_ERRORS.get(code, QueueError)
    if error is TaskNotFound:
        raise TaskNotFound(f"task {task_id} not found")
    if error is InvalidTransition:
        raise InvalidTransition(f"cannot {verb} task {task_id}: it is {status or 'in another state'}")
    if error is CorruptRecord:
        raise CorruptRecord(f"cannot {verb} task {task_id}: its stored record is corrupt "
                            "(not a task hash); delete it")
    raise error(f"{verb} task {task_id} failed with code {code}")


class _TranslateRedisErrors:
    """Turn redis-py connection errors and Redis Cluster outages into
    :class:`QueueUnavailable`, and Redis's passing refusals to write into :class:`RedisRefused`.

    The message names the error class only: redis-py messages can carry the URL, and a
    URL can carry a password. A class, not ``@contextmanager``: it wraps every public
    call, and a generator-based one costs ~1.5 µs more a call.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, traceback) -> bool:
        if exc is None:
            return False
        refused = refusal(exc)
        if refused is not None:
            raise refused from exc
        if not isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            if cluster_outage(exc):
                raise QueueUnavailable(f"Redis Cluster is not serving the queue's slot "
                                       f"({type(exc).__name__}); try again shortly") from exc
            return False
        if isinstance(exc, redis.AuthenticationError):
            raise QueueUnavailable("Redis refused the credentials (check the password in "
                                   "REDIS_URL or REDIS_PASSWORD)") from exc
        raise QueueUnavailable(f"Redis is unreachable ({type(exc).__name__})") from exc


_TRANSLATOR = _TranslateRedisErrors()


def translate_redis_errors() -> _TranslateRedisErrors:
    """``with translate_redis_errors():`` turns redis-py connection errors into
    :class:`QueueUnavailable` whose message never carries the URL (nor its password), and
    refusals to write (out of memory, read-only replica...) into :class:`RedisRefused`."""
    return _TRANSLATOR
