"""The ``openai`` backend's async path: ``AsyncOpenAI`` on the worker's event loop, against
a local chat-completions server (tests/support/openai_server.py)."""
from __future__ import annotations

import asyncio

import pytest

from engine import Settings
from engine.agent import AgentExecutor, build_backend, openai_backend, register_handlers
from engine.async_runner import AsyncRunner
from engine.errors import PermanentError, RetryableError
from tests.fixtures_engine import TEST_SETTINGS
from tests.support.openai_server import FakeOpenAIServer, Reply, openai_server  # noqa: F401 (fixture)

SECRET = "sk-test-Zq8cKp2Lw9RkSECRET0123456789"


@pytest.fixture(autouse=True, params=["aiohttp", "httpx"])
def transport(request, monkeypatch):
    """Every test here runs on both HTTP transports: the client's aiohttp one (the
    default, requirements.txt installs ``openai[aiohttp]``) and its httpx one (the
    fallback where aiohttp is missing)."""
    import openai
    if request.param == "httpx":
        monkeypatch.setattr(openai_backend, "async_http_client",
                            lambda: (openai.DefaultAsyncHttpxClient,
                                     openai_backend.HTTPX_CALLS_PER_CLIENT))
    return request.param


@pytest.mark.parametrize("transport", ["aiohttp"], indirect=True)
def test_the_async_path_runs_on_the_clients_aiohttp_transport_when_installed(transport):
    import openai
    assert openai_backend.async_http_client() == (
        openai.DefaultAioHttpClient, openai.DEFAULT_CONNECTION_LIMITS.max_connections)


def backend_for(server: FakeOpenAIServer, **extra: str):
    return build_backend(Settings.from_mapping(
        {"AGENT_BACKEND": "openai", "AGENT_OPENAI_BASE_URL": server.url,
         "AGENT_MODEL": "test-model", "AGENT_OPENAI_API_KEY": SECRET, **extra}, **TEST_SETTINGS))


def test_run_async_gives_what_run_gives(openai_server):
    backend = backend_for(openai_server)
    openai_server.push(Reply.success("Bonjour.", 5, 2))
    result = asyncio.run(backend.run_async("Say hello in French", "user-1"))
    assert result == {"answer": "Bonjour.", "backend": "openai", "model": "test-model",
                      "finish_reason": "stop",
                      "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    [request] = openai_server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["body"] == {"model": "test-model", "messages": [
        {"role": "user", "content": "Say hello in French"}]}
    assert request["headers"]["authorization"] == f"Bearer {SECRET}"


def test_run_async_translates_provider_errors_without_the_key(openai_server):
    backend = backend_for(openai_server)
    openai_server.push(Reply.rate_limited(retry_after="7"), Reply.error(401, f"bad key {SECRET}"))
    with pytest.raises(RetryableError) as limited:
        asyncio.run(backend.run_async("q"))
    assert limited.value.retry_after == 7.0
    with pytest.raises(PermanentError) as refused:
        asyncio.run(backend.run_async("q"))
    assert "401" in str(refused.value) and SECRET not in str(refused.value)


@pytest.mark.parametrize("reply", [Reply.malformed(), Reply.html(), Reply(200, raw=b'{"object": "list"}'),
                                   Reply(200, raw=b'{"choices": [7]}')])
def test_a_malformed_answer_is_retryable(openai_server, reply):
    backend = backend_for(openai_server)
    openai_server.push(reply)
    with pytest.raises(RetryableError, match="malformed response"):
        asyncio.run(backend.run_async("q"))


def test_run_async_times_out_as_a_retryable_error(openai_server):
    backend = backend_for(openai_server, AGENT_TIMEOUT="0.3")
    openai_server.push(Reply.slow(3))
    with pytest.raises(RetryableError, match="did not answer within 0.3 s"):
        asyncio.run(backend.run_async("q"))


def test_a_worker_runs_agent_queries_on_its_event_loop(openai_server, queue, make_worker):
    worker = make_worker(concurrency=20)
    executor = register_handlers(worker, executor=AgentExecutor(
        queue=queue, backend=backend_for(openai_server)))
    ids = [executor.execute_async(f"question {i}") for i in range(40)]
    stats = worker.start(burst=True)
    assert isinstance(worker.runner, AsyncRunner)
    assert stats["processed"] == 40
    answers = [queue.get_task_result(t)["result"]["answer"] for t in ids]
    assert answers == [f"echo: question {i}" for i in range(40)]


def test_calls_in_flight_share_clients_as_their_transport_allows(openai_server, transport):
    backend = backend_for(openai_server)
    openai_server.push(*[Reply.slow(0.3)] * 40)

    async def forty_at_once():
        return await asyncio.gather(*(backend.run_async(f"q{i}") for i in range(40)))

    assert [r["answer"] for r in asyncio.run(forty_at_once())] == [f"echo: q{i}" for i in range(40)]
    # aiohttp's pool carries them all on one client; httpx's is kept to 16 calls a client
    assert len(backend._async_clients) == (1 if transport == "aiohttp" else 3)
    assert all(calls == 0 for _, calls in backend._async_clients)
