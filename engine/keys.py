"""Every Redis key name the engine uses is built here, and only here.

All keys of one namespace share the hash tag ``{namespace}`` so that they live in one
Redis Cluster slot and the multi-key Lua scripts run there. The suffixes are the ones
operators know from the guide: ``queue:<priority>``, ``status:<status>``, ``task:<id>``,
``result:<id>``, ``workers``.
"""
from __future__ import annotations

import re

_NAMESPACE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

PRIORITY_NAMES = ("urgent", "high", "normal", "low")   # claim order
STATUS_NAMES = ("pending", "scheduled", "running", "completed", "failed", "retry", "cancelled")


class Keys:
    """Key names of one namespace (default ``agent_queue``)."""

    def __init__(self, namespace: str = "agent_queue"):
        if not _NAMESPACE.match(namespace or ""):
            raise ValueError(f"namespace must be 1-64 letters, digits, '_', '-' or '.': {namespace!r}")
        self.namespace = namespace
        self.prefix = "{%s}:" % namespace
        p = self.prefix
        self.queues = [p + "queue:" + name for name in PRIORITY_NAMES]
        self.status = {name: p + "status:" + name for name in STATUS_NAMES}
        self.scheduled = p + "scheduled"      # ids due later, scored by due time
        self.leases = p + "leases"            # ids being run, scored by lease deadline
        self.workers = p + "workers"          # worker ids, scored by last heartbeat
        self.marker = p + "marker"            # wake-up marker workers block on
        self.routed = p + "routed"            # pending ids set aside for a worker of their type
        self.handled = p + "handled"          # task type -> when a live worker last handled it
        self.events = p + "events"            # pub/sub channel
        self.events_log = p + "events:log"    # capped stream of the same events
        self.cancels = p + "cancels"          # pub/sub channel: ids of running tasks cancelled
        self.stats = p + "stats"              # lifetime counters
        self.idempotency_prefix = p + "idem:"
        self.schedules = p + "schedules"      # recurring schedule names, scored by next fire time
        self.audit = p + "audit"              # stream: who did what to which tasks, when
        self.probe = p + "probe"              # short-lived: a readiness probe's test write
        self.login_locked = p + "login:locked"  # locked-out sign-in scopes, scored by unlock time
        self.limits = p + "limits"            # provider limit keys, scored by last activity
        self.limits_due = p + "limits:due"    # limit keys with parked tasks, scored by when free
        self.serials = p + "serials"          # conversations with tasks waiting their turn
        # Tokens and cost (engine/usage.py, usage.lua): totals in hashes under usage_prefix
        # (usage:total, usage:model:<m>, usage:batch:<id>, usage:session:<id>, usage:m:<minute>),
        # their names indexed by last update; budgets holds the limits budget_spent reads.
        self.usage_prefix = p + "usage:"
        self.usage_total = p + "usage:total"
        self.usage_index = {"model": p + "usage:models", "batch": p + "usage:batches",
                            "session": p + "usage:sessions"}
        self.budgets = p + "budgets"

    def queue(self, priority_name: str) -> str:
        """The pending list of one priority (``urgent``, ``high``, ``normal``, ``low``)."""
        return self.prefix + "queue:" + priority_name

    def group_list(self, priority_name: str, group: str) -> str:
        """A fair-share group's waiting tasks at one priority (its marker ``@<group>`` waits
        in the priority list: engine/scripts/lib.lua)."""
        return self.queue(priority_name) + ":g:" + group

    def group_counts(self, priority_name: str) -> str:
        """Hash of one priority's grouped tasks and group markers (``tasks``, ``groups``):
        the list's depth is its length - groups + tasks."""
        return self.queue(priority_name) + ":grouped"

    def task(self, task_id: str) -> str:
        """The hash holding one task."""
        return self.prefix + "task:" + task_id

    def result(self, task_id: str) -> str:
        """The JSON result document of one finished task."""
        return self.prefix + "result:" + task_id

    def done(self, task_id: str) -> str:
        """A short-lived list a finishing script pushes to when someone waits on the task."""
        return self.prefix + "done:" + task_id

    def partial(self, task_id: str) -> str:
        """The text a running task has streamed so far (``task.stream``; progress.lua)."""
        return self.prefix + "partial:" + task_id

    @property
    def partial_prefix(self) -> str:
        """Prefix the scripts append a task id to for its streamed text."""
        return self.prefix + "partial:"

    def children(self, parent_id: str) -> str:
        """The ordered list of a batch's child task ids."""
        return self.prefix + "children:" + parent_id

    @property
    def children_prefix(self) -> str:
        """Prefix the scripts append a batch id to for its children list."""
        return self.prefix + "children:"

    @property
    def batch_keys(self) -> list[str]:
        """The nine keys every script that ends or reopens a task takes last (see lib.lua)."""
        return [self.task_prefix, self.result_prefix, self.done_prefix, self.status["running"],
                self.status["completed"], self.status["cancelled"], self.events_log, self.events,
                self.children_prefix]

    def schedule(self, name: str) -> str:
        """The hash holding one recurring schedule (cron, timezone, task template, next fire)."""
        return self.prefix + "schedule:" + name

    def login_attempts(self, scope: str) -> str:
        """Console sign-in attempts of one client address (or ``*`` for all), with a TTL."""
        return self.prefix + "login:attempts:" + scope

    @property
    def limit_prefix(self) -> str:
        """Prefix of a provider limit key's records (engine/limits.py): ``limit:<key>`` is
        its state hash, with ``:parked`` (tasks waiting for it), ``:inflight`` (calls
        under way) and ``:429s`` (the provider's last refusals) after it."""
        return self.prefix + "limit:"

    @property
    def serial_prefix(self) -> str:
        """Prefix of a conversation's turn: ``serial:<session>`` holds the id of the task
        whose turn it is, ``serial:<session>:waiting`` the tasks after it (claim.lua)."""
        return self.prefix + "serial:"

    def limit(self, key: str) -> str:
        """The state hash of one provider limit key."""
        return self.prefix + "limit:" + key

    def conversation(self, session_id: str) -> str:
        """One session's conversation: a list of JSON turns, oldest first
        (engine/agent/conversation.py)."""
        return self.prefix + "conversation:" + session_id

    def worker(self, worker_id: str) -> str:
        """The hash holding one worker's details."""
        return self.prefix + "worker:" + worker_id

    def idempotency(self, key: str) -> str:
        """Maps a caller's idempotency key to the task id it created."""
        return self.idempotency_prefix + key

    def minute_stats(self, minute: int) -> str:
        """Per-minute counters and latency histograms (``minute`` = epoch ms // 60000)."""
        return self.prefix + "stats:m:%d" % minute

    def usage(self, kind: str, name: str) -> str:
        """The token and cost totals of one model, batch or session (``kind``)."""
        return self.usage_prefix + kind + ":" + name

    def usage_minute(self, minute: int) -> str:
        """The token and cost totals of one minute (``minute`` = epoch ms // 60000)."""
        return self.usage_prefix + "m:%d" % minute

    @property
    def minute_stats_prefix(self) -> str:
        """Prefix the scripts append the minute number to."""
        return self.prefix + "stats:m:"

    @property
    def task_prefix(self) -> str:
        """Prefix the scripts append a task id to (scripts touching many tasks get it
        once in KEYS rather than one key per task)."""
        return self.prefix + "task:"

    @property
    def result_prefix(self) -> str:
        """Prefix the scripts append a task id to for result keys."""
        return self.prefix + "result:"

    @property
    def done_prefix(self) -> str:
        """Prefix the scripts append a task id to for waiter lists."""
        return self.prefix + "done:"
