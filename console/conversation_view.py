"""A session's conversation on the task detail: the queries and answers the agent keeps
for the session (engine/agent/conversation.py) and sends before each new query.

Shown for a task with a session when the session has a conversation (or the task takes
part in one), in an expander: "Conversation (4 turns)", oldest first, each turn with its
role, its task and its time. Queries and answers are the users' and the model's text:
drawn as text, never markup (console/text.py).
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from engine import ValidationError
from engine.agent import conversation

from .text import md
from .timefmt import local_text


def session_conversation(queue: Any, record: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The turns of the task's session's conversation; None when there is nothing to show
    (no session, an id the engine would refuse, no conversation and the task not in one)."""
    session_id = record.get("session_id")
    if not session_id:
        return None
    try:
        turns = conversation.load(queue, session_id)
    except ValidationError:
        return None
    payload = record.get("payload")
    joins = isinstance(payload, dict) and payload.get("conversation") is True
    return turns if turns or joins else None


def task_conversation(queue: Any, record: dict[str, Any], key: str) -> None:
    """The expander with the conversation of the task's session (nothing without one)."""
    turns = session_conversation(queue, record)
    if turns is None:
        return
    label = f"Conversation ({len(turns)} turn{'' if len(turns) == 1 else 's'})"
    with st.expander(label, icon=":material/forum:"), st.container(key=f"{key}_conversation"):
        st.caption(f"Session {md(record['session_id'], 120)}: what the agent sends before the "
                   "session's next query, oldest first (capped, and forgotten after a while).")
        if not turns:
            st.caption("Nothing yet: this task's query and answer join it when it completes.")
        for turn in turns:
            _turn(turn, record.get("task_id"))


def _turn(turn: dict[str, Any], open_task: Any) -> None:
    role = turn["role"]
    with st.chat_message(role):
        here = " (this task)" if turn.get("task_id") == open_task else ""
        st.caption(f"{'Query' if role == 'user' else 'Answer'} · task "
                   f"{md(turn.get('task_id'), 40)}{here} · {md(local_text(turn.get('at')))}")
        st.text(turn["content"])
