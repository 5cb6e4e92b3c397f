"""Agent execution on the queue: the executor users call and the handlers workers run.

``AgentExecutor.execute_async`` submits an AGENT_QUERY task; a worker runs it with
:meth:`AgentExecutor.execute`, through the backend chosen by ``AGENT_BACKEND``:

- ``demo`` (default): the offline demo agent, labelled as such in every answer;
- ``openai``: any OpenAI-compatible chat-completions server (:mod:`.openai_backend`);
- ``module.path:callable``: the user's own agent (:mod:`.custom`).

A backend is any object with ``name``, ``model`` and ``run(query, session_id) -> dict``
returning at least ``{"answer", "backend", "model", "usage"}``; one whose ``run`` (and
``run_async``) takes a ``history`` keyword is given the session's conversation so far
(:mod:`.conversation`) for the tasks that take part in one.
"""
from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
from typing import Any, Mapping

from ..config import Settings
from ..errors import ConfigurationError, PermanentError, ValidationError
from ..limits import check_limit_key
from ..models import MAX_QUERY_CHARS, AgentTask, RunningTask, TaskPriority, TaskType
from ..queue import TaskQueue, get_task_queue
# Not imported as `conversation`: execute_async has an argument of that name.
from . import conversation as conversations
from .conversation import conversation_flag
from .custom import CallableBackend
from .demo import DEMO_NOTICE, DemoBackend
from .openai_backend import OpenAIBackend   # imports the openai package only when used



def build_backend(settings: Settings) -> Any:
    """The backend ``AGENT_BACKEND`` names: ``demo``, ``openai`` or ``module.path:callable``.
    Raises ConfigurationError for an unknown name or an incomplete configuration."""
    name = (settings.agent_backend or "demo").strip()
    if name == "demo":
        return DemoBackend(settings.agent_demo_latency, settings.agent_demo_failure_rate)
    if name == "openai":
        return OpenAIBackend.from_settings(settings)
    if ":" in name:
        return CallableBackend.from_spec(name, model=settings.agent_model)
    raise ConfigurationError(f"unknown AGENT_BACKEND {name!r}: use demo, openai, or "
                             "module.path:callable (your own agent, e.g. myproject.agents:answer)")


def as_backend(llm: Any) -> Any:
    """``llm`` as a backend: a backend object as it is, anything else (a function, a
    LangChain model, chain or agent) wrapped in :class:`CallableBackend`."""
    if callable(getattr(llm, "run", None)) and hasattr(llm, "name") and hasattr(llm, "model"):
        return llm
    return CallableBackend(llm)


class AgentExecutor:
    """Runs agent queries in the background through the queue (or in-process).

    All arguments are optional. ``llm`` is the agent :meth:`execute` runs in this process
    (a function ``(query, session_id)``, a LangChain model/chain/agent, or a backend
    object); without it the backend ``AGENT_BACKEND`` names is used (``python worker.py``
    always runs the backend its own environment names). ``tool_registry`` is kept for the guide's
    signature: tools belong to your agent. ``config`` is a :class:`Settings` or a mapping
    of settings to override by field name (``{"agent_backend": "openai"}``).
    ``queue`` defaults to the process-wide queue; ``backend`` overrides everything.
    """

    def __init__(self, llm: Any = None, tool_registry: Any = None, config: Any = None, *,
                 queue: TaskQueue | None = None, backend: Any = None,
                 settings: Settings | None = None):
        self.llm, self.tool_registry, self.config = llm, tool_registry, config
        self._queue = queue
        self.settings = _settings(settings, config, queue)
        if backend is None and llm is not None:
            backend = as_backend(llm)
        self.backend = backend or build_backend(self.settings)
        # Whether the backend's calls take the conversation (a ``history`` keyword).
        self._history_sync = _takes_history(getattr(self.backend, "run", None))
        self._history_async = _takes_history(getattr(self.backend, "run_async", None))

    @property
    def queue(self) -> TaskQueue:
        """The queue tasks are submitted to."""
        if self._queue is None:
            self._queue = get_task_queue()
        return self._queue

    @property
    def has_queue(self) -> bool:
        """Whether a queue is bound yet (``queue`` would otherwise build the default one)."""
        return self._queue is not None

    def bind_queue(self, queue: TaskQueue) -> None:
        """Submit to ``queue`` from now on (e.g. the one a console is connected to)."""
        self._queue = queue

    def execute_async(self, query: str, session_id: str | None = None,
                      priority: TaskPriority | int | str = "normal",
                      conversation: bool | None = None, **task_options: Any) -> str:
        """Submit ``query`` as an AGENT_QUERY task; returns the task id.

        With a ``session_id`` the task joins the session's conversation (its earlier
        queries and answers are sent before this one, and its own are kept for the next)
        unless ``conversation`` is False; None (the default) follows AGENT_CONVERSATIONS
        (on unless set off). Without a session there is no conversation to join."""
        query = validate_query(query)
        payload: dict[str, Any] = {"query": query}
        joins = conversation_flag(self.settings, conversation)
        if session_id:
            payload["session_id"] = session_id
            if joins:
                payload["conversation"] = True
        elif conversation:
            raise ValidationError("conversation=True needs a session_id: a conversation is "
                                  "that of a session")
        return self.queue.submit_task(AgentTask(payload=payload, priority=priority,
                                                session_id=session_id, **task_options))

    def get_conversation(self, session_id: str) -> list[dict[str, Any]]:
        """The conversation of ``session_id``: its turns ``{"role", "content", "task_id",
        "at"}`` (``at`` in epoch ms), oldest first; empty when it has none or it expired."""
        return conversations.load(self.queue, session_id)

    def clear_conversation(self, session_id: str) -> bool:
        """Forget the conversation of ``session_id`` (its next task starts afresh); True
        when there was one."""
        return conversations.clear(self.queue, session_id)

    def get_task_status(self, task_id: str) -> dict[str, Any] | None:
        """The task's status dict (see ``TaskQueue.get_task_status``)."""
        return self.queue.get_task_status(task_id)

    def get_task_result(self, task_id: str) -> dict[str, Any] | None:
        """The task's result document once it finished, else None."""
        return self.queue.get_task_result(task_id)

    def execute(self, query: str, session_id: str | None = None) -> dict[str, Any]:
        """Run the agent on ``query`` here and now (what a worker does for each task)."""
        return self.backend.run(validate_query(query), session_id)

    def handle(self, task: RunningTask) -> dict[str, Any]:
        """The AGENT_QUERY handler a worker registers (a task's ``timeout`` bounds the
        call on backends that take one; a backend with a ``limit_key`` tells the task
        what the provider said of its limits)."""
        query, session_id = task_query(task)
        options: dict[str, Any] = {}
        if task.timeout and getattr(self.backend, "accepts_timeout", False):
            options["timeout"] = float(task.timeout)
        if getattr(self.backend, "limit_key", None):
            options["on_signal"] = task.note_provider
        if not conversations.joins_conversation(task.payload, session_id):
            return self.backend.run(query, session_id, **options, **self._stream_options(task))
        started, queue = time.monotonic(), self._queue_of(task)
        turns = conversations.load(queue, session_id)
        if self._history_sync:
            options["history"] = conversations.history(turns, task.task_id)
        result = self.backend.run(query, session_id, **options, **self._stream_options(task))
        self._remember(queue, task, session_id, query, result, started)
        return result

    async def handle_async(self, task: RunningTask) -> dict[str, Any]:
        """The AGENT_QUERY handler for a backend with ``run_async`` (the ``openai`` one):
        awaited on the worker's event loop, so one worker keeps many calls in flight."""
        query, session_id = task_query(task)
        timeout = float(task.timeout) if task.timeout else None
        options = self._stream_options(task)
        if not conversations.joins_conversation(task.payload, session_id):
            return await self.backend.run_async(query, session_id, timeout=timeout,
                                                on_signal=task.note_provider, **options)
        # The conversation's Redis calls run in a thread: the loop keeps serving the
        # other calls in flight meanwhile.
        started, queue = time.monotonic(), self._queue_of(task)
        turns = await asyncio.to_thread(conversations.load, queue, session_id)
        if self._history_async:
            options["history"] = conversations.history(turns, task.task_id)
        result = await self.backend.run_async(query, session_id, timeout=timeout,
                                              on_signal=task.note_provider, **options)
        await asyncio.to_thread(self._remember, queue, task, session_id, query, result, started)
        return result

    def _queue_of(self, task: RunningTask) -> Any:
        """The queue of the worker running ``task`` (this executor's when run by hand)."""
        worker_queue = getattr(task.worker, "queue", None)
        return worker_queue if worker_queue is not None else self.queue

    @staticmethod
    def _remember(queue: Any, task: RunningTask, session_id: str, query: str,
                  result: Any, started: float) -> None:
        """Append the query and its answer to the conversation, unless the task ended
        while its handler ran (cancelled, or past its timeout: the worker has given it up,
        and the answer will not be the task's)."""
        if task.cancelled or (task.timeout and time.monotonic() - started > float(task.timeout)):
            return
        conversations.append(queue, session_id, task.task_id, query,
                             conversations.answer_text(result))

    def _stream_options(self, task: RunningTask) -> dict[str, Any]:
        """A streaming backend's sink for the answer (``task.stream``: readers see it grow)
        and how it learns the task was cancelled (asked between streamed pieces)."""
        if not getattr(self.backend, "streams", False):
            return {}
        return {"on_text": task.stream, "cancelled": lambda: task.cancelled}

    @property
    def limit_key(self) -> str | None:
        """The provider limit key the agent's calls run under: the backend's own (the
        ``openai`` one names backend, host and model), or, when AGENT_LIMIT_* caps are
        set for a backend without one, ``<backend> <model>``; None: not limited."""
        key = getattr(self.backend, "limit_key", None)
        if key:
            return key
        s = self.settings
        if s.agent_limit_rpm or s.agent_limit_tpm or s.agent_limit_concurrency:
            return check_limit_key(f"{self.backend.name} {self.backend.model}")
        return None


def _takes_history(call: Any) -> bool:
    """Whether a backend's ``run`` (or ``run_async``) takes a ``history`` keyword."""
    if not callable(call):
        return False
    try:
        param = inspect.signature(call).parameters.get("history")
    except (TypeError, ValueError):
        return False
    return param is not None and param.kind is not param.POSITIONAL_ONLY


def _settings(settings: Settings | None, config: Any, queue: TaskQueue | None) -> Settings:
    base = settings or (queue.settings if queue is not None else None)
    if isinstance(config, Settings):
        return config
    if base is None:
        base = Settings.from_env()
    if config is None:
        return base
    if not isinstance(config, Mapping):
        raise ValidationError("config must be a Settings or a mapping of setting names to values")
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigurationError(f"unknown setting(s) in config: {', '.join(unknown)}")
    return dataclasses.replace(base, **config)


def validate_query(query: Any) -> str:
    """A query must be non-blank text of reasonable size."""
    if not isinstance(query, str) or not query.strip():
        raise ValidationError("query must be non-empty text")
    if len(query) > MAX_QUERY_CHARS:
        raise ValidationError(f"query is {len(query):,} characters, over the limit of {MAX_QUERY_CHARS:,}")
    return query


def task_query(task: RunningTask) -> tuple[str, str | None]:
    """An AGENT_QUERY task's query and session id (PermanentError for a bad query:
    retrying cannot fix the task's own input)."""
    try:
        query = validate_query(task.payload.get("query", ""))
    except ValidationError as exc:
        raise PermanentError(str(exc)) from None
    session_id = task.payload.get("session_id") or task.session_id
    if session_id is not None and task.payload.get("conversation") is True:
        try:
            conversations.check_session(session_id)   # it names the conversation's key
        except ValidationError as exc:
            raise PermanentError(str(exc)) from None
    return query, session_id


def register_handlers(worker: Any, settings: Settings | None = None,
                      executor: AgentExecutor | None = None) -> AgentExecutor:
    """Register the agent's handlers on a worker; returns the executor they use. A backend
    with ``run_async`` (``openai``) gets the ``async def`` handler; the handler runs under
    the agent's limit key, capped by AGENT_LIMIT_RPM/_TPM/_CONCURRENCY when they are set."""
    executor = executor or AgentExecutor(queue=worker.queue, settings=settings or worker.queue.settings)
    has_async = callable(getattr(executor.backend, "run_async", None))
    key = executor.limit_key
    worker.register_handler(TaskType.AGENT_QUERY,
                            executor.handle_async if has_async else executor.handle, limit=key)
    s = executor.settings
    if key and (s.agent_limit_rpm or s.agent_limit_tpm or s.agent_limit_concurrency):
        worker.queue.set_limit(key, rpm=s.agent_limit_rpm, tpm=s.agent_limit_tpm,
                               concurrency=s.agent_limit_concurrency)
    return executor


__all__ = ["AgentExecutor", "CallableBackend", "DEMO_NOTICE", "DemoBackend", "as_backend",
           "build_backend", "register_handlers", "validate_query"]
