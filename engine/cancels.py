"""How a cancel reaches the worker running the task: within a moment, not at its next
heartbeat.

cancel.lua publishes the id of every running task it cancels on the namespace's cancels
channel (engine/keys.py). Each worker listens in a thread of its own and, for a task it
holds, tells its runner, which cancels an ``async def`` handler, lets a plain handler see
``task.context.cancelled`` and frees the slot (engine/runners.py). The channel carries
nothing else, so a busy queue costs a listening worker nothing. A message missed while
the connection is down is caught by the heartbeat, which learns the same thing later.
"""
from __future__ import annotations

import logging
from typing import Callable

import redis

log = logging.getLogger("engine.worker")

LISTEN_SLEEP_SECONDS = 0.5      # how long the listener thread blocks between looks


class CancelListener:
    """Calls ``on_cancel(task_id)`` for each id published on ``channel`` until stopped."""

    def __init__(self, client: redis.Redis, channel: str, on_cancel: Callable[[str], None]):
        self.client, self.channel, self.on_cancel = client, channel, on_cancel
        self.pubsub = None
        self.thread = None
        self.stopped = False

    def start(self) -> None:
        """Subscribe and listen in a daemon thread (a connection of its own)."""
        self.stopped = False
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            self.pubsub.subscribe(**{self.channel: self._deliver})
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Redis went away since the worker registered: the heartbeat still tells the
            # worker of cancelled tasks, only later.
            log.warning("cancel listener not started: %s", type(exc).__name__)
            self.pubsub.close()
            self.pubsub = None
            return
        self.thread = self.pubsub.run_in_thread(sleep_time=LISTEN_SLEEP_SECONDS, daemon=True,
                                                exception_handler=self._on_error)

    def _deliver(self, message: dict) -> None:
        try:
            self.on_cancel(message["data"])
        except Exception:  # a failure here must not end the listening
            log.exception("cancel of %r could not be passed on", message.get("data"))

    def _on_error(self, exc: BaseException, pubsub, thread) -> None:
        # redis-py subscribes again on the next read after a reconnect; keep listening.
        # After a stop, the connection closing under the last wait is no news.
        if not self.stopped:
            log.warning("cancel listener: %s; reconnecting", type(exc).__name__)

    def stop(self) -> None:
        """Stop listening. The thread closes its connection when its current wait ends
        (within LISTEN_SLEEP_SECONDS): a stopping worker does not wait for that."""
        self.stopped = True
        if self.thread is not None:
            self.thread.stop()
            self.thread = None
        elif self.pubsub is not None:
            self.pubsub.close()
