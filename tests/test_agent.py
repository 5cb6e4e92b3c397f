"""The agent executor and its backends: demo (offline), the user's own (module:callable).

The ``openai`` backend has its own file (tests/test_agent_openai.py).
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from engine import ConfigurationError, PermanentError, RetryableError, Settings, TaskQueue, ValidationError
from engine.agent import (DEMO_NOTICE, AgentExecutor, CallableBackend, DemoBackend, build_backend,
                          register_handlers)
from tests.fixtures_engine import TEST_SETTINGS
from tests.support.processes import REPO_ROOT, worker_env

CALLS: list[tuple] = []


# -- agents the module:callable backend imports (AGENT_BACKEND=tests.test_agent:...) ----------
def echo_agent(query, session_id=None):
    """A custom agent taking the session by keyword."""
    CALLS.append((query, session_id))
    return f"custom answer to {query!r} for {session_id}"


def positional_agent(query, session):
    return {"answer": query.upper(), "model": "my-model", "usage": {"total_tokens": 3},
            "sources": ["a", "b"]}


def one_argument_agent(query):
    return {"answer": query[::-1]}


def wrong_shape_agent(query):
    return 42


def refusing_agent(query):
    raise PermanentError("policy: this agent does not answer that")


class LangChainLike:
    """Shaped like a LangChain runnable: ``invoke(input, config=None)`` returning a message."""

    class Message:
        def __init__(self, content):
            self.content = content
            self.usage_metadata = {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}

    def invoke(self, text, config=None):
        CALLS.append((text, config))
        return self.Message(f"lc: {text}")


langchain_agent = LangChainLike()


def agent_settings(**env: str) -> Settings:
    return Settings.from_mapping({"AGENT_DEMO_LATENCY": "0", **env}, **TEST_SETTINGS)


@pytest.fixture
def agent(queue: TaskQueue) -> AgentExecutor:
    return AgentExecutor(queue=queue, settings=agent_settings())


# -- the executor -------------------------------------------------------------------------------
def test_the_guides_calls_work_end_to_end(queue, agent, make_worker):
    task_id = agent.execute_async(query="What is machine learning?", session_id="user-123",
                                  priority="high")
    status = agent.get_task_status(task_id)
    assert status["status"] == "pending" and status["priority"] == "high"
    assert agent.get_task_result(task_id) is None
    worker = make_worker()
    register_handlers(worker, agent.settings)
    assert worker.process_one() is True
    assert agent.get_task_status(task_id)["status"] == "completed"
    result = agent.get_task_result(task_id)["result"]
    assert result["answer"].startswith(DEMO_NOTICE) and "What is machine learning?" in result["answer"]
    assert result["backend"] == "demo" and result["model"] == "demo"
    assert set(result["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert queue.get_task(task_id)["session_id"] == "user-123"


def test_all_three_constructor_arguments_are_optional(queue):
    agent = AgentExecutor(None, None, {"agent_demo_latency": 0}, queue=queue)
    assert isinstance(agent.backend, DemoBackend)
    assert agent.execute("hello")["answer"].startswith(DEMO_NOTICE)


def test_execute_runs_in_process(agent):
    result = agent.execute("What is Redis?", session_id="s1")
    assert result["backend"] == "demo" and "What is Redis?" in result["answer"]


def test_an_llm_passed_in_is_what_execute_runs(queue):
    agent = AgentExecutor(lambda query, session_id=None: f"mine: {query}", queue=queue,
                          settings=agent_settings())
    assert agent.execute("hi") == {"answer": "mine: hi", "backend": "custom",
                                   "model": "<lambda>", "usage": {}}
    assert AgentExecutor(langchain_agent, queue=queue).execute("hi")["answer"] == "lc: hi"


@pytest.mark.parametrize("query", ["", "   ", None, 42, "x" * 100_001])
def test_a_bad_query_is_rejected_before_anything_is_written(queue, agent, query):
    with pytest.raises(ValidationError):
        agent.execute_async(query)
    assert queue.client.keys("{%s}:*" % queue.namespace) == []


def test_a_task_with_a_blank_query_fails_for_good(queue, agent, make_worker):
    from engine import AgentTask
    task_id = queue.submit_task(AgentTask(payload={"query": " "}))
    worker = make_worker()
    register_handlers(worker, agent.settings)
    worker.process_one()
    result = queue.get_task_result(task_id)
    assert result["status"] == "failed" and "query must be non-empty" in result["error"]


def test_unknown_config_keys_are_named(queue):
    with pytest.raises(ConfigurationError, match="agent_bakend"):
        AgentExecutor(config={"agent_bakend": "openai"}, queue=queue)


# -- the demo backend ---------------------------------------------------------------------------
def test_demo_failures_go_to_retry(queue, make_worker):
    settings = agent_settings(AGENT_DEMO_FAILURE_RATE="1")
    task_id = AgentExecutor(queue=queue, settings=settings).execute_async("q")
    worker = make_worker()
    register_handlers(worker, settings)
    worker.process_one()
    status = queue.get_task(task_id)
    assert status["status"] == "retry" and "simulated transient failure" in status["error"]


def test_demo_is_never_presented_as_an_llm():
    backend = build_backend(agent_settings())
    result = backend.run("anything at all")
    assert backend.name == backend.model == "demo"
    assert result["answer"].startswith(DEMO_NOTICE) and "no LLM was called" in result["answer"]


# -- build_backend ------------------------------------------------------------------------------
@pytest.mark.parametrize("name, match", [
    ("gpt4", "unknown AGENT_BACKEND 'gpt4'"),
    ("openai", "needs an API key"),
    ("no_such_module_xyz:run", "cannot import no_such_module_xyz"),
    ("tests.test_agent:nope", "has no attribute nope"),
    (":run", "module.path:callable"),
])
def test_bad_backend_configuration_is_a_clear_error(name, match, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match=match):
        build_backend(agent_settings(AGENT_BACKEND=name))


def test_every_backend_has_name_model_and_run():
    for env in ({}, {"AGENT_BACKEND": "tests.test_agent:echo_agent"},
                {"AGENT_BACKEND": "openai", "AGENT_OPENAI_API_KEY": "sk-x", "AGENT_MODEL": "m"}):
        backend = build_backend(agent_settings(**env))
        assert isinstance(backend.name, str) and isinstance(backend.model, str)
        assert callable(backend.run)


# -- the module:callable backend ------------------------------------------------------------------
@pytest.mark.parametrize("spec, query, session, expected", [
    ("tests.test_agent:echo_agent", "q1", "s1",
     {"answer": "custom answer to 'q1' for s1", "backend": "custom",
      "model": "tests.test_agent:echo_agent", "usage": {}}),
    ("tests.test_agent:positional_agent", "q2", "s2",
     {"answer": "Q2", "model": "my-model", "usage": {"total_tokens": 3}, "sources": ["a", "b"],
      "backend": "custom"}),
    ("tests.test_agent:one_argument_agent", "abc", "s3",
     {"answer": "cba", "backend": "custom", "model": "tests.test_agent:one_argument_agent", "usage": {}}),
    ("tests.test_agent:langchain_agent", "q4", "s4",
     {"answer": "lc: q4", "backend": "custom", "model": "tests.test_agent:langchain_agent",
      "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}),
])
def test_custom_agents_are_called_with_query_and_session(spec, query, session, expected):
    CALLS.clear()
    assert build_backend(agent_settings(AGENT_BACKEND=spec)).run(query, session) == expected
    if spec.endswith("echo_agent"):
        assert CALLS == [("q1", "s1")]
    if spec.endswith("langchain_agent"):
        assert CALLS == [("q4", {"configurable": {"session_id": "s4"}})]


def test_a_worker_runs_a_custom_agent(queue, make_worker):
    settings = agent_settings(AGENT_BACKEND="tests.test_agent:echo_agent", AGENT_MODEL="house-agent")
    agent = AgentExecutor(queue=queue, settings=settings)
    ok = agent.execute_async("What is Redis?", session_id="u-9")
    worker = make_worker()
    register_handlers(worker, settings)
    while worker.process_one():
        pass
    result = queue.get_task_result(ok)["result"]
    assert result == {"answer": "custom answer to 'What is Redis?' for u-9", "backend": "custom",
                      "model": "house-agent", "usage": {}}


def test_a_custom_agent_returning_the_wrong_shape_fails_for_good(queue, make_worker):
    for spec, match in (("tests.test_agent:wrong_shape_agent", "returned int; it must return a str"),
                        ("tests.test_agent:refusing_agent", "policy: this agent does not answer")):
        settings = agent_settings(AGENT_BACKEND=spec)
        task_id = AgentExecutor(queue=queue, settings=settings).execute_async("q")
        worker = make_worker()
        register_handlers(worker, settings)
        worker.process_one()
        result = queue.get_task_result(task_id)
        assert result["status"] == "failed" and match in result["error"]
        assert result["attempts"] == 1                       # no retries for a permanent error


def test_a_custom_agent_may_ask_for_a_retry():
    def flaky(query):
        raise RetryableError("upstream busy", retry_after=12)
    with pytest.raises(RetryableError) as caught:
        CallableBackend(flaky).run("q")
    assert caught.value.retry_after == 12


# -- worker.py start-up ---------------------------------------------------------------------------
@pytest.mark.parametrize("env, shown", [
    ({}, "backend=demo model=demo"),
    ({"AGENT_BACKEND": "tests.test_agent:echo_agent", "AGENT_MODEL": "house-agent"},
     "backend=custom model=house-agent"),
])
def test_worker_banner_names_backend_and_model(redis_url, namespace, env, shown):
    done = subprocess.run([sys.executable, "worker.py", "--burst"], cwd=REPO_ROOT, timeout=60,
                          env=worker_env(redis_url, namespace, **env), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("Initializing LLM...") and shown in line for line in lines), done.stdout
    assert any("Initializing tools..." in line for line in lines)
    assert any("Initializing agent executor..." in line for line in lines)


def test_worker_refuses_to_start_with_a_bad_backend(redis_url, namespace):
    done = subprocess.run([sys.executable, "worker.py", "--burst"], cwd=REPO_ROOT, timeout=60,
                          env=worker_env(redis_url, namespace, AGENT_BACKEND="nope"),
                          capture_output=True, text=True)
    assert done.returncode == 2 and "unknown AGENT_BACKEND 'nope'" in done.stderr
