"""The ``openai`` backend: the real ``openai`` client against a local chat-completions
server (tests/support/openai_server.py, loopback only), directly and through workers."""
from __future__ import annotations

import logging
import subprocess
import sys
import time
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import pytest

from engine import AgentTask, PermanentError, RetryableError, Settings, TaskQueue
from engine.agent import AgentExecutor, build_backend, register_handlers
from engine.agent.openai_backend import OpenAIBackend, retry_after_seconds
from engine.connection import connect
from tests.fixtures_engine import TEST_SETTINGS
from tests.support.openai_server import FakeOpenAIServer, Reply, openai_server  # noqa: F401 (fixture)
from tests.support.processes import REPO_ROOT, worker_env

SECRET = "sk-test-Zq8cKp2Lw9RkSECRET0123456789"


def openai_env(server: FakeOpenAIServer, **extra: str) -> dict[str, str]:
    return {"AGENT_BACKEND": "openai", "AGENT_OPENAI_BASE_URL": server.url,
            "AGENT_MODEL": "test-model", "AGENT_OPENAI_API_KEY": SECRET, **extra}


def openai_settings(server: FakeOpenAIServer, **extra: str) -> Settings:
    return Settings.from_mapping(openai_env(server, **extra), **TEST_SETTINGS)


@pytest.fixture
def backend(openai_server) -> OpenAIBackend:
    return build_backend(openai_settings(openai_server, AGENT_TIMEOUT="0.5",
                                         AGENT_SYSTEM_PROMPT="Answer in one sentence."))


def raised(backend: OpenAIBackend, query: str = "q") -> Exception:
    with pytest.raises((RetryableError, PermanentError)) as caught:
        backend.run(query)
    return caught.value


# -- one call -----------------------------------------------------------------------------------
def test_a_completion_gives_answer_model_and_usage(backend, openai_server):
    openai_server.push(Reply.success("Machine learning is learning from data.", 21, 9))
    result = backend.run("What is machine learning?", "user-123")
    assert result == {"answer": "Machine learning is learning from data.", "backend": "openai",
                      "model": "test-model", "finish_reason": "stop",
                      "usage": {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}}
    [request] = openai_server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["body"] == {"model": "test-model", "messages": [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "What is machine learning?"}]}
    assert request["headers"]["authorization"] == f"Bearer {SECRET}"


def test_the_client_never_retries_by_itself(backend, openai_server):
    assert backend._client.max_retries == 0 and backend._client.timeout == 0.5
    openai_server.push(Reply.error(500, "boom"))
    raised(backend)
    assert len(openai_server.requests) == 1


@pytest.mark.parametrize("reply, seconds", [
    (Reply.rate_limited("7"), 7.0),
    (Reply.rate_limited("1.5"), 1.5),
    (Reply.rate_limited("2500", header="retry-after-ms"), 2.5),
    (Reply.rate_limited(None), None),
    (Reply.error(503, "overloaded", headers={"Retry-After": "30"}), 30.0),
])
def test_429_and_5xx_are_retried_after_what_the_provider_asks(backend, openai_server, reply, seconds):
    openai_server.push(reply)
    error = raised(backend)
    assert isinstance(error, RetryableError) and error.retry_after == seconds
    assert f"HTTP {reply.status}" in str(error)


def test_retry_after_as_an_http_date():
    when = datetime(2027, 1, 15, 8, 0, 40, tzinfo=timezone.utc)
    headers = {"retry-after": format_datetime(when, usegmt=True)}
    assert retry_after_seconds(headers, now=(when - timedelta(seconds=40)).timestamp()) == 40.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after": "-5"}) == 0.0


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_are_retryable(backend, openai_server, status):
    openai_server.push(Reply.error(status, "try later"))
    error = raised(backend)
    assert isinstance(error, RetryableError) and "try later" in str(error)


@pytest.mark.parametrize("reply, message", [
    (Reply.error(400, "Invalid value for 'messages'"), "HTTP 400: Invalid value for 'messages'"),
    (Reply.error(404, "The model `test-model` does not exist"), "HTTP 404: The model `test-model` does not exist"),
    (Reply.error(422, "Unprocessable"), "HTTP 422: Unprocessable"),
    (Reply(404, {"error": "model 'llama3.2' not found, try pulling it first"}),   # Ollama's shape
     "HTTP 404: model 'llama3.2' not found, try pulling it first"),
])
def test_other_4xx_fail_for_good_with_the_providers_message(backend, openai_server, reply, message):
    openai_server.push(reply)
    error = raised(backend)
    assert isinstance(error, PermanentError) and message in str(error)


def test_a_slow_answer_times_out_and_is_retryable(backend, openai_server):
    openai_server.push(Reply.slow(5))
    started = time.monotonic()
    error = raised(backend)
    assert isinstance(error, RetryableError) and "did not answer within 0.5 s" in str(error)
    assert 0.4 < time.monotonic() - started < 3
    assert len(openai_server.requests) == 1


@pytest.mark.parametrize("reply", [Reply.malformed(), Reply.html(), Reply(200, raw=b'{"object": "list"}')])
def test_a_malformed_answer_is_retryable(backend, openai_server, reply):
    openai_server.push(reply)
    error = raised(backend)
    assert isinstance(error, RetryableError) and "malformed response" in str(error)


def test_an_unreachable_server_is_retryable():
    with FakeOpenAIServer() as server:
        url = server.url
    backend = OpenAIBackend(model="m", base_url=url, api_key=SECRET, timeout=2)
    error = raised(backend)
    assert isinstance(error, RetryableError) and "could not reach" in str(error)


def test_a_local_server_needs_no_key(openai_server):
    backend = build_backend(Settings.from_mapping({"AGENT_BACKEND": "openai", "AGENT_MODEL": "llama3.2",
                                                   "AGENT_OPENAI_BASE_URL": openai_server.url}))
    assert backend.run("hi")["answer"] == "echo: hi"


def test_the_api_key_never_appears_in_errors_results_or_logs(backend, openai_server, caplog):
    caplog.set_level(logging.DEBUG)
    openai_server.push(Reply.error(401, f"Incorrect API key provided: {SECRET}. You can find "
                                        "your API key at https://platform.openai.com."),
                       Reply.error(401, "Incorrect API key provided: sk-test-Zq8c*********6789."),
                       Reply.rate_limited("1"))
    texts = [str(raised(backend)) for _ in range(3)]
    texts.append(str(backend.run("hello")))
    texts += [repr(backend), caplog.text]
    assert "Incorrect API key provided: ***" in texts[0]
    for text in texts:
        assert SECRET not in text and "Zq8c" not in text


# -- through the queue ---------------------------------------------------------------------------
def test_a_worker_runs_a_query_through_the_server(queue, openai_server, make_worker):
    settings = openai_settings(openai_server)
    openai_server.push(Reply.success("Redis is an in-memory data store.", 12, 8))
    task_id = AgentExecutor(queue=queue, settings=settings).execute_async(
        "What is Redis?", session_id="user-123", priority="high")
    worker = make_worker()
    register_handlers(worker, settings)
    assert worker.process_one() is True
    result = queue.get_task_result(task_id)
    assert result["status"] == "completed"
    assert result["result"] == {"answer": "Redis is an in-memory data store.", "backend": "openai",
                                "model": "test-model", "finish_reason": "stop",
                                "usage": {"prompt_tokens": 12, "completion_tokens": 8,
                                          "total_tokens": 20}}


def test_a_429_defers_until_the_providers_time_without_spending_an_attempt(
        clocked_queue, fixed_clock, openai_server, make_worker):
    settings = openai_settings(openai_server)
    openai_server.push(Reply.rate_limited("7"))
    task_id = AgentExecutor(queue=clocked_queue, settings=settings).execute_async("What is Redis?")
    worker = make_worker(queue=clocked_queue)
    register_handlers(worker, settings)
    assert worker.process_one() is True
    status = clocked_queue.get_task_status(task_id)
    key = worker.handlers.limit_keys["agent_query"]
    assert status["status"] == "pending" and status["attempts"] == 0
    until = int(clocked_queue.client.hget(clocked_queue.keys.task(task_id), "limited_until"))
    assert until - fixed_clock.now_ms() == 7000
    assert status["reason"].startswith(f"rate limited by {key} until ")
    fixed_clock.advance(6.9)
    assert worker.process_one() is False                     # the key is paused
    fixed_clock.advance(0.1)
    assert worker.process_one() is True
    result = clocked_queue.get_task_result(task_id)
    assert result["status"] == "completed" and result["attempts"] == 1
    assert result["result"]["answer"] == "echo: What is Redis?"
    assert clocked_queue.get_task_status(task_id)["reason"] == "completed"


def test_a_429_on_redis_time_waits_about_retry_after(queue, openai_server, make_worker):
    settings = openai_settings(openai_server)
    openai_server.push(Reply.rate_limited("30"))
    task_id = AgentExecutor(queue=queue, settings=settings).execute_async("q")
    worker = make_worker()
    register_handlers(worker, settings)
    worker.process_one()
    until_ms = int(queue.client.hget(queue.keys.task(task_id), "limited_until"))
    seconds, micros = queue.client.time()
    assert abs((until_ms - (seconds * 1000 + micros // 1000)) / 1000 - 30) < 1.0


def test_a_quota_429_is_a_permanent_failure_not_a_wait(queue, openai_server, make_worker):
    settings = openai_settings(openai_server)
    openai_server.push(Reply.error(429, "You exceeded your current quota", "insufficient_quota"))
    task_id = AgentExecutor(queue=queue, settings=settings).execute_async("q")
    worker = make_worker()
    register_handlers(worker, settings)
    worker.process_one()
    status = queue.get_task_status(task_id)
    assert status["status"] == "failed" and "exceeded your current quota" in status["error"]

def test_a_permanent_error_fails_the_task_at_once_without_the_key(queue, openai_server, make_worker):
    settings = openai_settings(openai_server)
    openai_server.push(Reply.error(401, f"Incorrect API key provided: {SECRET}"))
    task_id = AgentExecutor(queue=queue, settings=settings).execute_async("q", max_retries=5)
    worker = make_worker()
    register_handlers(worker, settings)
    worker.process_one()
    task, result = queue.get_task(task_id), queue.get_task_result(task_id)
    assert result["status"] == "failed" and result["attempts"] == 1
    assert "HTTP 401: Incorrect API key provided: ***" in result["error"]
    stored = str(task) + str(result) + str(queue.read_events(count=100))
    assert SECRET not in stored and "Zq8c" not in stored


def test_a_tasks_own_timeout_bounds_the_call(queue, openai_server, make_worker):
    settings = openai_settings(openai_server, AGENT_TIMEOUT="30")
    openai_server.push(Reply.slow(5))
    task_id = queue.submit_task(AgentTask(payload={"query": "q"}, timeout=0.3))
    worker = make_worker()
    register_handlers(worker, settings)
    started = time.monotonic()
    worker.process_one()
    assert time.monotonic() - started < 3
    assert "did not answer within 0.3 s" in queue.get_task(task_id)["error"]


def test_worker_py_with_the_openai_backend(redis_url, namespace, openai_server):
    queue = TaskQueue(connect(redis_url), settings=Settings.from_mapping({}), namespace=namespace)
    task_id = queue.submit_task(AgentTask(payload={"query": "What is a task queue?"}))
    done = subprocess.run([sys.executable, "worker.py", "--burst"], cwd=REPO_ROOT, timeout=60,
                          env=worker_env(redis_url, namespace, **openai_env(openai_server)),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Initializing LLM... backend=openai model=test-model" in done.stdout
    assert "processed 1" in done.stdout
    assert SECRET not in done.stdout + done.stderr
    assert queue.get_task_result(task_id)["result"]["answer"] == "echo: What is a task queue?"
