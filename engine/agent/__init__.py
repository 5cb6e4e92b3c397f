"""Agent execution on the queue: the executor users call and the handlers workers run.

``AgentExecutor.execute_async`` submits an AGENT_QUERY task; a worker runs it with
:meth:`AgentExecutor.execute`, through the backend chosen by ``AGENT_BACKEND``.
"""
from __future__ import annotations

from typing import Any

from ..config import Settings
from ..errors import ValidationError
from ..models import AgentTask, RunningTask, TaskPriority, TaskType
from ..queue import TaskQueue, get_task_queue
from .demo import DEMO_NOTICE, DemoBackend

MAX_QUERY_CHARS = 100_000


def build_backend(settings: Settings) -> Any:
    """The backend ``settings.agent_backend`` names."""
    name = settings.agent_backend
    if name == "demo":
        return DemoBackend(settings.agent_demo_latency, settings.agent_demo_failure_rate)
    raise ValidationError(f"unknown AGENT_BACKEND {name!r}: use demo")


class AgentExecutor:
    """Runs agent queries in the background through the queue (or in-process).

    ``llm``, ``tool_registry`` and ``config`` are optional; ``backend`` overrides the one
    the settings name; ``queue`` defaults to the process-wide queue.
    """

    def __init__(self, llm: Any = None, tool_registry: Any = None, config: Any = None, *,
                 queue: TaskQueue | None = None, backend: Any = None,
                 settings: Settings | None = None):
        self.llm, self.tool_registry, self.config = llm, tool_registry, config
        self._queue = queue
        self.settings = settings or (queue.settings if queue is not None else Settings.from_env())
        self.backend = backend or build_backend(self.settings)

    @property
    def queue(self) -> TaskQueue:
        """The queue tasks are submitted to."""
        if self._queue is None:
            self._queue = get_task_queue()
        return self._queue

    def execute_async(self, query: str, session_id: str | None = None,
                      priority: TaskPriority | int | str = "normal", **task_options: Any) -> str:
        """Submit ``query`` as an AGENT_QUERY task; returns the task id."""
        query = validate_query(query)
        payload = {"query": query}
        if session_id:
            payload["session_id"] = session_id
        return self.queue.submit_task(AgentTask(payload=payload, priority=priority,
                                                session_id=session_id, **task_options))

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
        """The AGENT_QUERY handler a worker registers."""
        return self.execute(task.payload.get("query", ""), task.payload.get("session_id"))


def validate_query(query: Any) -> str:
    """A query must be non-blank text of reasonable size."""
    if not isinstance(query, str) or not query.strip():
        raise ValidationError("query must be non-empty text")
    if len(query) > MAX_QUERY_CHARS:
        raise ValidationError(f"query is {len(query):,} characters, over the limit of {MAX_QUERY_CHARS:,}")
    return query


def register_handlers(worker: Any, settings: Settings | None = None,
                      executor: AgentExecutor | None = None) -> AgentExecutor:
    """Register the agent's handlers on a worker; returns the executor they use."""
    executor = executor or AgentExecutor(queue=worker.queue, settings=settings or worker.queue.settings)
    worker.register_handler(TaskType.AGENT_QUERY, executor.handle)
    return executor


__all__ = ["AgentExecutor", "DEMO_NOTICE", "DemoBackend", "build_backend", "register_handlers",
           "validate_query"]
