"""The ``openai`` backend streams the answer as it is generated (``AGENT_STREAM``, on by
default): each piece reaches ``task.stream``, so readers see it grow; the usage comes from
the last chunk; a cancelled task's stream is left between pieces. Against the local
chat-completions server's server-sent events (tests/support/openai_server.py)."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from engine import Settings
from engine.agent import AgentExecutor, build_backend, register_handlers
from engine.errors import PermanentError, RetryableError
from tests.fixtures_engine import TEST_SETTINGS
from tests.support.openai_server import FakeOpenAIServer, Reply, openai_server  # noqa: F401 (fixture)
from tests.support.steps import wait_until

PARTS = ["The ", "answer ", "is ", "forty-two."]
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def backend_for(server: FakeOpenAIServer, **extra: str):
    return build_backend(Settings.from_mapping(
        {"AGENT_BACKEND": "openai", "AGENT_OPENAI_BASE_URL": server.url,
         "AGENT_MODEL": "test-model", "AGENT_OPENAI_API_KEY": "sk-test-streaming", **extra},
        **TEST_SETTINGS))


@pytest.mark.parametrize("path", ["thread", "async"])
def test_the_answer_streams_to_the_sink_with_the_usage_of_the_last_chunk(openai_server, path):
    backend = backend_for(openai_server)
    openai_server.push(Reply.streamed(PARTS))
    pieces: list[str] = []
    if path == "thread":
        result = backend.run("What is it?", on_text=pieces.append)
    else:
        result = asyncio.run(backend.run_async("What is it?", on_text=pieces.append))
    assert pieces == PARTS
    assert result == {"answer": "The answer is forty-two.", "backend": "openai",
                      "model": "test-model", "usage": USAGE, "finish_reason": "stop"}
    body = openai_server.requests[-1]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("path", ["thread", "async"])
def test_a_server_that_ignores_stream_gives_the_answer_whole(openai_server, path):
    backend = backend_for(openai_server)
    whole = (b'{"model": "m", "choices": [{"message": {"content": "All at once."}, '
             b'"finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 3, '
             b'"total_tokens": 4}}')
    openai_server.push(Reply(200, raw=whole))
    pieces: list[str] = []
    run = backend.run if path == "thread" else lambda *a, **k: asyncio.run(backend.run_async(*a, **k))
    result = run("q", on_text=pieces.append)
    assert pieces == ["All at once."] and result["answer"] == "All at once."
    assert result["usage"]["total_tokens"] == 4


@pytest.mark.parametrize("reply", [Reply.malformed(), Reply.html(), Reply(200, raw=b'{"object": "list"}')])
def test_a_malformed_streamed_answer_is_retryable(openai_server, reply):
    backend = backend_for(openai_server)
    openai_server.push(reply)
    with pytest.raises(RetryableError, match="malformed response"):
        backend.run("q", on_text=lambda text: None)


def test_a_cancel_between_pieces_closes_the_stream(openai_server):
    backend = backend_for(openai_server)
    openai_server.push(Reply.streamed([f"part {i} " for i in range(20)], gap=0.2))
    pieces: list[str] = []
    started = time.monotonic()
    with pytest.raises(PermanentError, match="cancelled while its answer streamed"):
        backend.run("q", on_text=pieces.append, cancelled=lambda: len(pieces) >= 2)
    assert pieces == ["part 0 ", "part 1 "]
    assert time.monotonic() - started < 2.0       # not the 4 s the whole stream takes


def test_agent_stream_false_asks_for_one_reply(openai_server, queue, make_worker):
    backend = backend_for(openai_server, AGENT_STREAM="false")
    assert backend.streams is False
    worker = make_worker(concurrency=2)
    executor = register_handlers(worker, executor=AgentExecutor(queue=queue, backend=backend))
    task_id = executor.execute_async("hello")
    worker.start(burst=True)
    assert "stream" not in openai_server.requests[-1]["body"]
    assert queue.get_task_result(task_id)["result"]["answer"] == "echo: hello"
    assert queue.get_task_status(task_id)["partial"] == ""


# -- through a worker: readers see the answer grow ------------------------------------------
def started(worker) -> threading.Thread:
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("kind", ["thread", "async"])
def test_readers_see_the_agents_answer_grow_and_keep_it(openai_server, queue, make_worker, kind):
    executor = AgentExecutor(queue=queue, backend=backend_for(openai_server))
    worker = make_worker(concurrency=4)
    if kind == "async":
        register_handlers(worker, executor=executor)
    else:
        worker.register_handler("agent_query", executor.handle)     # the plain handler
    openai_server.push(Reply.streamed(PARTS, gap=0.3))
    task_id = executor.execute_async("What is it?")
    thread = started(worker)
    try:
        wait_until(lambda: queue.get_task_status(task_id)["partial"].startswith("The "),
                   timeout=10, what="the first piece of the answer")
        status = queue.get_task_status(task_id)
        assert status["status"] == "running" and status["partial"] != "The answer is forty-two."
        assert queue.wait_for_result(task_id, timeout=10)["status"] == "completed"
    finally:
        worker.stop()
        thread.join(10)
    status = queue.get_task_status(task_id)
    assert status["partial"] == "The answer is forty-two."        # replayed after the end
    result = queue.get_task_result(task_id)["result"]
    assert result["answer"] == "The answer is forty-two." and result["usage"] == USAGE


def test_cancelling_a_streaming_thread_handler_stops_it_between_pieces(openai_server, queue,
                                                                       make_worker):
    executor = AgentExecutor(queue=queue, backend=backend_for(openai_server))
    ended: dict[str, str] = {}

    def handler(task):
        try:
            return executor.handle(task)
        except Exception as exc:
            ended["error"] = str(exc)
            raise
    worker = make_worker(concurrency=2)
    worker.register_handler("agent_query", handler)
    openai_server.push(Reply.streamed([f"part {i} " for i in range(20)], gap=0.2))
    task_id = executor.execute_async("a long answer")
    thread = started(worker)
    try:
        wait_until(lambda: queue.get_task_status(task_id)["partial"], timeout=10,
                   what="the first piece")
        queue.cancel_task(task_id, reason="enough", by="tester")
        # The handler leaves the stream at the next piece, long before its 4 s end.
        wait_until(lambda: "error" in ended, timeout=2.0, what="the handler to leave the stream")
    finally:
        worker.stop()
        thread.join(10)
    assert "cancelled while its answer streamed" in ended["error"]
    assert queue.get_task_result(task_id)["status"] == "cancelled"
    assert len(queue.get_task_status(task_id)["partial"]) < len("".join(f"part {i} " for i in range(20)))


def test_a_worker_process_streams_the_answer_another_process_reads(openai_server, queue,
                                                                   redis_url, namespace):
    from engine.agent import AgentExecutor as Executor
    from tests.support.processes import WorkerProcess, worker_env
    env = worker_env(redis_url, namespace, AGENT_BACKEND="openai", AGENT_MODEL="test-model",
                     AGENT_OPENAI_BASE_URL=openai_server.url,
                     AGENT_OPENAI_API_KEY="sk-test-streaming")
    openai_server.push(Reply.streamed(PARTS, gap=0.4))
    task_id = Executor(queue=queue).execute_async("What is it?")
    worker = WorkerProcess(env, "--handlers", "tests.support.stream_handlers", "--concurrency", "4")
    try:
        wait_until(lambda: queue.get_task_status(task_id)["partial"].startswith("The "),
                   timeout=30, what=f"the first piece from the worker process\n{worker.output()}")
        assert queue.get_task_status(task_id)["status"] == "running"
        result = queue.wait_for_result(task_id, timeout=15)
        assert result["result"]["answer"] == "The answer is forty-two."
        assert queue.get_task_status(task_id)["partial"] == "The answer is forty-two."
        events = [e["data"] for e in queue.read_events(count=1000)
                  if e["type"] == "task.progress" and e["data"]["task_id"] == task_id]
        assert 2 <= len(events) <= 5        # a piece every 0.4 s: written as it came
        assert "".join(e["text"] for e in events) == "The answer is forty-two."
    finally:
        worker.signal(15)
        worker.wait()
        worker.close()
