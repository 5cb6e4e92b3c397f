"""Live events: a pub/sub subscription in a background thread, and stream catch-up."""
from __future__ import annotations

import json
import logging
from typing import Any, Callable

import redis

log = logging.getLogger(__name__)


class EventSubscription:
    """A running subscription to the events channel; call :meth:`stop` to end it.

    The callback receives redis-py's message dict, whose ``'data'`` is the JSON text of
    ``{"type": ..., "data": {...}}`` (the guide's shape). An exception in the callback is
    logged and the subscription goes on.
    """

    def __init__(self, client: redis.Redis, channel: str, callback: Callable[[dict], Any]):
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)

        def deliver(message: dict) -> None:
            try:
                callback(message)
            except Exception:  # a bad callback must not kill the listener thread
                log.exception("event callback failed")

        self._pubsub.subscribe(**{channel: deliver})
        self._thread = self._pubsub.run_in_thread(sleep_time=0.5, daemon=True,
                                                  exception_handler=self._on_error)

    @staticmethod
    def _on_error(exc: BaseException, pubsub, thread) -> None:
        # redis-py re-subscribes on the next read after a reconnect; keep listening.
        log.warning("event subscription: %s; reconnecting", type(exc).__name__)

    @property
    def running(self) -> bool:
        """Whether the listener thread is alive."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop listening and close the connection."""
        self._thread.stop()
        self._thread.join(timeout=2)
        try:
            self._pubsub.close()
        except Exception:  # closing a dead connection is fine
            pass


def parse_stream_entries(entries: list) -> list[dict[str, Any]]:
    """XRANGE/XREVRANGE replies → ``[{"id": stream id, "type": ..., "data": {...}}]``, one
    item per event (events of one batch call share their stream id)."""
    out = []
    for entry_id, fields in entries:
        try:
            events = json.loads(fields.get("e", "{}"))
        except ValueError:
            continue
        # One entry per script call: a single event, or an array of the call's events.
        for event in events if isinstance(events, list) else [events]:
            if not isinstance(event, dict):     # not an event: a reader must not fail on it
                continue
            data = event.get("data", {})
            out.append({"id": entry_id, "type": event.get("type"),
                        "data": data if isinstance(data, dict) else {}})
    return out
