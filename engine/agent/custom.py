"""The ``module.path:callable`` backend: the user's own agent (LangChain or hand-written).

``AGENT_BACKEND=myproject.agents:answer`` imports ``myproject.agents`` in the worker and
calls ``answer(query, session_id)`` (or ``answer(query)`` when it takes one argument) for
each task. A callable with a ``history`` parameter (``answer(query, session_id, history)``,
passed by keyword) is also given the session's conversation so far
(engine/agent/conversation.py): a list of ``{"role": "user" | "assistant", "content"}``
messages, oldest first, or None for a task outside any conversation; callables without
one are called as before. An object with an ``invoke`` method (a LangChain runnable, chain
or agent) is called as ``invoke(query)``, with ``config={"configurable": {"session_id":
...}}`` when the task has a session, which is what LangChain's message-history wrappers
read (they keep their own history: the queue's is not passed to them).

The agent may return a string (the answer), a dict with at least ``"answer"`` (kept as
it is, so it can add its own fields), LangChain's ``{"output": ...}`` or a chat message
(anything with a ``content`` string). It may raise :class:`engine.errors.PermanentError`
(do not retry) or :class:`engine.errors.RetryableError` (retry, optionally after
``retry_after`` seconds); any other exception is retried with the task's retry policy.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from ..errors import ConfigurationError, PermanentError


class CallableBackend:
    """Runs a user-supplied agent; ``label`` names it in results and the worker's banner."""

    name = "custom"

    def __init__(self, target: Any, label: str | None = None, model: str | None = None):
        if not callable(target) and not callable(getattr(target, "invoke", None)):
            raise ConfigurationError(f"{label or target!r} is neither callable nor has invoke()")
        self._target = target
        self.label = label or getattr(target, "__name__", None) or type(target).__name__
        self.model = model or self.label
        self._session_arg = _session_argument(target)
        self._takes_history = _takes_history(target)

    @classmethod
    def from_spec(cls, spec: str, model: str | None = None) -> "CallableBackend":
        """Import ``module.path:attribute`` (the attribute may be dotted: ``mod:obj.method``)."""
        module_name, sep, attribute = spec.partition(":")
        if not sep or not module_name or not attribute:
            raise ConfigurationError(f"AGENT_BACKEND={spec!r}: use demo, openai, or "
                                     "module.path:callable (e.g. myproject.agents:answer)")
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigurationError(f"AGENT_BACKEND={spec}: cannot import {module_name} ({exc})") from None
        for part in attribute.split("."):
            try:
                target = getattr(target, part)
            except AttributeError:
                raise ConfigurationError(f"AGENT_BACKEND={spec}: {module_name} has no "
                                         f"attribute {attribute}") from None
        return cls(target, label=spec, model=model)

    def run(self, query: str, session_id: str | None = None,
            history: list[dict[str, str]] | None = None) -> dict[str, Any]:
        """Call the agent and return its answer document (``history`` reaches it only when
        it has a ``history`` parameter)."""
        return answer_document(self._call(query, session_id, history), self.name, self.model,
                               self.label)

    def _call(self, query: str, session_id: str | None,
              history: list[dict[str, str]] | None = None) -> Any:
        invoke = getattr(self._target, "invoke", None)
        if callable(invoke) and not inspect.isroutine(self._target):
            if session_id:
                return invoke(query, config={"configurable": {"session_id": session_id}})
            return invoke(query)
        more = {"history": history} if self._takes_history else {}
        if self._session_arg == "keyword":
            return self._target(query, session_id=session_id, **more)
        if self._session_arg == "positional":
            return self._target(query, session_id, **more)
        return self._target(query, **more)


def _session_argument(target: Any) -> str | None:
    """How to pass the session id: "keyword", "positional", or None (one argument only)."""
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return "positional"
    if any(p.name == "session_id" for p in params):
        return "keyword"
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return "positional"
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.name != "history"]
    return "positional" if len(positional) >= 2 else None


def _takes_history(target: Any) -> bool:
    """Whether the callable takes a ``history`` keyword (its conversation so far)."""
    try:
        param = inspect.signature(target).parameters.get("history")
    except (TypeError, ValueError):
        return False
    return param is not None and param.kind is not param.POSITIONAL_ONLY


def answer_document(out: Any, backend: str, model: str, label: str) -> dict[str, Any]:
    """Normalise what an agent returned to ``{"answer", "backend", "model", "usage", ...}``."""
    if isinstance(out, str):
        doc: dict[str, Any] = {"answer": out}
    elif isinstance(out, dict) and "answer" in out:
        doc = dict(out)
    elif isinstance(out, dict) and "output" in out:   # LangChain AgentExecutor
        doc = {"answer": out["output"]}
    elif isinstance(getattr(out, "content", None), str):   # a chat message (LangChain AIMessage)
        doc = {"answer": out.content, "usage": _message_usage(out)}
    else:
        raise PermanentError(f"agent {label} returned {type(out).__name__}; it must return a "
                             "str or a dict with an 'answer' key")
    doc.setdefault("backend", backend)
    doc.setdefault("model", model)
    doc.setdefault("usage", {})
    return doc


def _message_usage(message: Any) -> dict[str, Any]:
    meta = getattr(message, "usage_metadata", None)
    if not isinstance(meta, dict):
        return {}
    return {"prompt_tokens": meta.get("input_tokens"), "completion_tokens": meta.get("output_tokens"),
            "total_tokens": meta.get("total_tokens")}
