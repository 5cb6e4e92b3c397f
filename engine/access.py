"""Who may change what, checked by the engine itself, and an audit trail of every change.

Roles, each with the verbs of the one before:

- ``viewer``: reads only;
- ``operator``: submit, cancel, retry, requeue (``OPERATOR_VERBS``);
- ``admin``: also delete, purge, recurring schedules, budgets and provider limits
  (``ADMIN_VERBS``).

A console maps a signed-in identity to a role with :func:`role_for` (``CONSOLE_ADMINS``,
``CONSOLE_OPERATORS``, ``CONSOLE_VIEWERS``: emails, ``*@example.com``, ``group:<name>``,
or ``*``), and then works on ``acting_as(queue, identity)``: a facade that forwards every
read to the queue and checks the role before each state-changing verb, so a request a
viewer forges (a button it was never shown, a replayed widget event) is refused here, not
only hidden. Every state-changing call, done or refused, is appended to the audit stream
``{ns}:audit`` (who, role, what, which tasks, when, outcome), which :func:`read_audit`
reads back and :func:`audit_csv` exports.
"""
from __future__ import annotations

import csv
import enum
import io
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from . import clock
from .config import Settings
from .errors import AccessDenied, translate_redis_errors

AUDIT_MAX_LEN = 100_000       # entries kept, approximately (XADD MAXLEN ~)
AUDIT_IDS_SHOWN = 200         # task ids written per entry; the count is always complete


class Role(enum.IntEnum):
    """Console roles, ordered: each may do what the ones below it may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        """The role's name as configured and shown: viewer, operator, admin."""
        return self.name.lower()


OPERATOR_VERBS = frozenset({"submit", "cancel", "retry", "requeue"})
ADMIN_VERBS = frozenset({"delete", "purge", "schedule", "budget", "limit"})


def required_role(verb: str) -> Role:
    """The least role that may run ``verb`` (one of OPERATOR_VERBS | ADMIN_VERBS)."""
    if verb in OPERATOR_VERBS:
        return Role.OPERATOR
    if verb in ADMIN_VERBS:
        return Role.ADMIN
    raise ValueError(f"unknown verb {verb!r}")


@dataclass(frozen=True)
class Identity:
    """Who acts: a name (an email when the provider gives one), its role, how it signed in."""

    name: str
    role: Role
    source: str = "oidc"          # oidc, password, or local (no sign-in configured)
    groups: tuple[str, ...] = field(default=())

    def can(self, verb: str) -> bool:
        """Whether this identity may run ``verb``."""
        return self.role >= required_role(verb)


def _entries(text: str | None) -> list[str]:
    return [part.strip().lower() for part in (text or "").split(",") if part.strip()]


def _matches(entry: str, email: str, groups: Iterable[str]) -> bool:
    if entry == "*":
        return True
    if entry.startswith("group:"):
        return entry[6:] in {g.lower() for g in groups}
    if entry.startswith("*@"):
        return email.endswith(entry[1:])
    return email == entry


def role_for(settings: Settings, email: str | None, groups: Iterable[str] = ()) -> Role | None:
    """The highest role whose configured list names ``email`` or one of ``groups``; None
    when no list does (that identity gets no access at all)."""
    address, groups = (email or "").strip().lower(), list(groups)
    for role, entries in ((Role.ADMIN, settings.console_admins),
                          (Role.OPERATOR, settings.console_operators),
                          (Role.VIEWER, settings.console_viewers)):
        if any(_matches(entry, address, groups) for entry in _entries(entries)):
            return role
    return None


# Queue verbs, and the store's script calls that engine helpers (batches, schedules) use
# directly: each with the verb it counts as.
QUEUE_VERBS = {"submit_task": "submit", "submit_tasks": "submit", "cancel_task": "cancel",
               "retry_task": "retry", "requeue_task": "requeue", "delete_task": "delete",
               "delete_tasks": "delete", "purge": "purge", "promote_due": "requeue",
               "reap_expired_leases": "requeue", "set_budget": "budget", "set_limit": "limit"}
STORE_VERBS = {"submit": "submit", "submit_streamed": "submit", "open_batch": "submit",
               "cancel": "cancel", "retry": "retry", "requeue": "requeue", "delete": "delete",
               "add_schedule": "schedule", "fire_schedule": "schedule",
               "pause_schedule": "schedule", "resume_schedule": "schedule",
               "remove_schedule": "schedule",
               # A console never runs a worker's calls: refused to anyone below admin.
               "claim": "purge", "wait_and_claim": "purge", "complete": "purge", "fail": "purge",
               "release": "purge", "heartbeat": "purge", "worker_stop": "purge", "usage": "purge",
               "settle": "purge", "defer": "purge", "progress": "purge", "append_turn": "purge",
               "wake": "purge", "promote": "requeue", "reap": "requeue"}


class _Guarded:
    """Shared by the two facades: forward reads, check and audit the verbs."""

    _verbs: dict[str, str] = {}

    def __init__(self, target: Any, queue: Any, identity: Identity):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_queue", queue)
        object.__setattr__(self, "identity", identity)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        verb = self._verbs.get(name)
        if verb is None:
            return value
        return self._checked(name, verb, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a guarded queue is read-only")

    def _checked(self, name: str, verb: str, call: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            subject = _subject(name, args, kwargs)
            if not self.identity.can(verb):
                write_audit(self._queue, self.identity, name, subject, "denied")
                raise AccessDenied(f"{self.identity.name} ({self.identity.role.label}) may not "
                                   f"{verb}: it needs the {required_role(verb).label} role")
            if name == "cancel_task":      # the task keeps who cancelled it
                kwargs.setdefault("by", self.identity.name)
            try:
                result = call(*args, **kwargs)
            except Exception as exc:
                write_audit(self._queue, self.identity, name, subject, "error",
                            type(exc).__name__)
                raise
            if name in ("submit_task", "submit_tasks"):
                subject = result if isinstance(result, list) else [result]
            detail = {"purge": lambda: f"{args[0] if args else kwargs.get('status')}: {result} deleted",
                      "delete_tasks": lambda: f"{result} deleted"}.get(name, lambda: "")()
            write_audit(self._queue, self.identity, name, subject, "ok", detail)
            return result
        return run


class _GuardedStore(_Guarded):
    _verbs = STORE_VERBS


class GuardedQueue(_Guarded):
    """A :class:`~engine.queue.TaskQueue` as ``identity`` may use it (see the module doc)."""

    _verbs = QUEUE_VERBS

    @property
    def store(self) -> _GuardedStore:
        """The script calls, guarded the same way (engine.batch and the scheduler use them)."""
        return _GuardedStore(self._target.store, self._target, self.identity)

    def acting_as(self, identity: Identity) -> "GuardedQueue":
        """The same queue for another identity, never one with a higher role than this one's."""
        if identity.role > self.identity.role:
            raise AccessDenied(f"{self.identity.name} ({self.identity.role.label}) cannot take "
                               f"the {identity.role.label} role")
        return acting_as(self._target, identity)

    @property
    def unguarded(self) -> Any:
        """The queue itself, for code that has checked the role already."""
        return self._target


def acting_as(queue: Any, identity: Identity) -> GuardedQueue:
    """``queue`` as ``identity`` may use it: reads pass, verbs are checked and audited."""
    if isinstance(queue, GuardedQueue):
        queue = queue.unguarded
    return GuardedQueue(queue, queue, identity)


def _subject(name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> list[str]:
    """What a call acts on, as text: task ids (of tasks, store rows or streamed chunks of
    rows), a schedule's name; nothing for a purge (its status goes in the detail)."""
    first = args[0] if args else next(iter(kwargs.values()), None)
    if first is None or name == "purge":
        return []
    if name == "submit_streamed":
        return [_one(row) for chunk in first for row in chunk]
    if isinstance(first, (list, tuple)):
        return [_one(item) for item in first]
    return [_one(first)]


def _one(item: Any) -> str:
    if isinstance(item, (list, tuple)) and item:     # a store row, an (id, token) pair
        item = item[0]
    return str(getattr(item, "task_id", None) or getattr(item, "value", None) or item)[:200]


def write_audit(queue: Any, identity: Identity, action: str, subject: Sequence[str],
                outcome: str, detail: str = "") -> None:
    """Append one entry to the audit stream."""
    ids = list(subject)
    entry = {"at": str(clock.now_ms()), "who": identity.name, "role": identity.role.label,
             "source": identity.source, "action": action, "count": str(len(ids)),
             "tasks": json.dumps(ids[:AUDIT_IDS_SHOWN]), "outcome": outcome, "detail": detail[:500]}
    with translate_redis_errors():
        queue.client.xadd(queue.keys.audit, entry, maxlen=AUDIT_MAX_LEN, approximate=True)


def read_audit(queue: Any, count: int = 200, before: str | None = None) -> list[dict[str, Any]]:
    """The newest ``count`` audit entries (older than entry id ``before``), newest first."""
    upper = f"({before}" if before else "+"
    with translate_redis_errors():
        rows = queue.client.xrevrange(queue.keys.audit, upper, "-", count=count)
    out = []
    for entry_id, fields in rows:
        record = dict(fields)
        record["id"] = entry_id
        record["at"] = clock.to_iso(int(record.get("at") or entry_id.split("-")[0]))
        record["tasks"] = json.loads(record.get("tasks") or "[]")
        record["count"] = int(record.get("count") or 0)
        out.append(record)
    return out


AUDIT_COLUMNS = ("at", "who", "role", "source", "action", "outcome", "count", "tasks", "detail", "id")


def audit_csv(entries: Iterable[dict[str, Any]]) -> str:
    """The entries as CSV text (task ids space-separated in one column)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(AUDIT_COLUMNS)
    for entry in entries:
        writer.writerow([" ".join(entry.get(c) or []) if c == "tasks" else entry.get(c, "")
                         for c in AUDIT_COLUMNS])
    return buffer.getvalue()
