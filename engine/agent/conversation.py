"""Conversations by session: the queries and answers of a session, kept in Redis and sent
to the provider before the next query, so "and in French?" follows the answer before it.

An AGENT_QUERY task joins its session's conversation when its payload says
``"conversation": true`` and names a session (``AgentExecutor.execute_async`` writes the
flag from ``AGENT_CONVERSATIONS``, or from its ``conversation`` argument). Batch and CSV
children never carry it: ten thousand rows sharing a session id are ten thousand
separate questions, not one conversation.

The conversation of a session is a Redis list under ``{ns}:conversation:<session id>``
(engine/keys.py) of JSON turns, oldest first::

    {"role": "user" | "assistant", "content": "...", "task_id": "...", "at": <epoch ms>}

A task's query and answer are appended together once its handler succeeded
(append_turn.lua: a failed attempt leaves nothing, and a task whose outcome was lost and
that runs again does not append twice). The list is capped by messages
(``AGENT_CONVERSATION_MAX_TURNS``) and by estimated tokens
(``AGENT_CONVERSATION_MAX_TOKENS``, 4 characters a token), oldest first, the newest
exchange always kept; it expires ``AGENT_CONVERSATION_TTL`` seconds after its last turn.
With ``QUEUE_ENCRYPTION_KEYS`` the contents are sealed like payloads (the token estimate
then counts the sealed text, about a third longer).
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import redis

from ..config import Settings
from ..crypto import PREFIX, Undecryptable, open_text
from ..errors import ValidationError, translate_redis_errors
from ..validation import MAX_SESSION_CHARS, check_text

CHARS_PER_TOKEN = 4
ROLES = ("user", "assistant")
SEALED = "[encrypted: no key of this process opens it]"


def check_session(session_id: Any) -> str:
    """A session id as the engine takes it (1-200 characters of text, no control
    characters); ValidationError naming ``session_id`` otherwise."""
    return check_text(session_id, "session_id", MAX_SESSION_CHARS)


def joins_conversation(payload: Mapping[str, Any], session_id: str | None) -> bool:
    """Whether a task with ``payload`` takes part in its session's conversation: the flag
    is set (exactly ``true``) and the task has a session."""
    return payload.get("conversation") is True and bool(session_id)


def conversation_flag(settings: Settings, conversation: bool | None) -> bool:
    """A task's flag: ``conversation`` when given, else ``AGENT_CONVERSATIONS``."""
    if conversation is None:
        return settings.agent_conversations
    if not isinstance(conversation, bool):
        raise ValidationError(f"conversation must be True, False or None, got {conversation!r}")
    return conversation


def load(queue: Any, session_id: str) -> list[dict[str, Any]]:
    """The turns of ``session_id``'s conversation, oldest first (empty when it has none or
    it expired). An entry that is not a turn (a hand-edited Redis) is skipped; a key of
    another type reads as no conversation."""
    key = queue.keys.conversation(check_session(session_id))
    try:
        with translate_redis_errors():
            entries = queue.client.lrange(key, 0, -1)
    except redis.ResponseError as exc:   # a key of another type: append_turn.lua replaces it
        if not str(exc).startswith("WRONGTYPE"):
            raise
        entries = []
    return [turn for turn in map(_turn, entries) if turn is not None]


def history(turns: list[dict[str, Any]], task_id: str) -> list[dict[str, str]]:
    """The messages a provider is sent before the query: each turn's role and content,
    leaving out the turns of ``task_id`` itself (an earlier attempt of this task appended
    them, and its outcome was lost: this attempt answers as that one did, without them)."""
    return [{"role": t["role"], "content": t["content"]} for t in turns
            if t.get("task_id") != task_id and t["content"] != SEALED]


def append(queue: Any, session_id: str, task_id: str, query: str, answer: str) -> bool:
    """Append a task's query and its answer to the conversation (capped, TTL refreshed);
    False when this task's turn is there already."""
    settings: Settings = queue.settings
    sealer = queue.sealer
    if sealer is not None:
        query, answer = sealer.seal(query), sealer.seal(answer)
    with translate_redis_errors():
        code, _ = queue.store.append_turn(
            check_session(session_id), task_id, query, answer,
            settings.agent_conversation_max_turns,
            settings.agent_conversation_max_tokens * CHARS_PER_TOKEN,
            int(settings.agent_conversation_ttl * 1000))
    return int(code) == 1


def clear(queue: Any, session_id: str) -> bool:
    """Forget ``session_id``'s conversation; True when there was one."""
    key = queue.keys.conversation(check_session(session_id))
    with translate_redis_errors():
        return bool(queue.client.delete(key))


def answer_text(result: Any) -> str:
    """The text of a backend's answer document that the conversation keeps."""
    answer = result.get("answer") if isinstance(result, dict) else None
    if isinstance(answer, str):
        return answer
    return "" if answer is None else json.dumps(answer, ensure_ascii=False, default=str)


def _turn(entry: Any) -> dict[str, Any] | None:
    """One stored entry as a turn (its content opened when sealed), or None."""
    try:
        turn = json.loads(entry)
    except (TypeError, ValueError):
        return None
    if not isinstance(turn, dict) or turn.get("role") not in ROLES \
            or not isinstance(turn.get("content"), str):
        return None
    if turn["content"].startswith(PREFIX):
        try:
            turn["content"] = open_text(turn["content"])
        except Undecryptable:
            turn["content"] = SEALED
    return turn
