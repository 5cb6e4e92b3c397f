"""A small OpenAI-compatible chat-completions server for tests: loopback only, no network.

It speaks just enough of the protocol for the real ``openai`` client: ``POST
/v1/chat/completions`` answers with the next scripted :class:`Reply`, or by default a
success that echoes the user's message with token usage. A request with ``"stream": true``
gets a success as server-sent events, as OpenAI sends them: one ``chat.completion.chunk``
per part of the answer (``Reply.streamed`` sets the parts and a pause between them), a
last chunk with the usage when ``stream_options.include_usage`` is set, then ``[DONE]``,
over a chunked HTTP body. Every request is recorded
(path, headers with lower-case names, parsed body) so tests can check what the client sent.

    with FakeOpenAIServer() as server:
        server.push(Reply.rate_limited(retry_after="7"), Reply.success("hi"))
        ... point the backend at server.url ...
"""
from __future__ import annotations

import collections
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Iterator

import pytest

from tests.support.local_http import LocalHTTPServer


@dataclass
class Reply:
    """One scripted answer: status, JSON-able body (or raw bytes), headers, delay before it."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None
    content_type: str = "application/json"

    @classmethod
    def success(cls, answer: str | None = None, prompt_tokens: int = 11,
                completion_tokens: int = 7, model: str | None = None) -> "Reply":
        """A chat completion; ``answer`` None echoes the user's message."""
        return cls(200, {"answer": answer, "prompt_tokens": prompt_tokens,
                         "completion_tokens": completion_tokens, "model": model})

    @classmethod
    def streamed(cls, parts: list[str], gap: float = 0.0, prompt_tokens: int = 11,
                 completion_tokens: int = 7) -> "Reply":
        """A success whose answer comes as ``parts``, ``gap`` seconds apart, when the
        request streams (a request that does not gets the parts joined, as JSON)."""
        return cls(200, {"answer": "".join(parts), "parts": list(parts), "gap": gap,
                         "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "model": None})

    @classmethod
    def rate_limited(cls, retry_after: str | None = "3", header: str = "Retry-After") -> "Reply":
        """429 in OpenAI's error format, with a Retry-After header (seconds or a date)."""
        headers = {header: retry_after} if retry_after is not None else {}
        return cls.error(429, "Rate limit reached for requests", "rate_limit_exceeded", headers)

    @classmethod
    def error(cls, status: int, message: str, code: str | None = None,
              headers: dict[str, str] | None = None) -> "Reply":
        """An error in OpenAI's format: ``{"error": {"message", "type", "code"}}``."""
        return cls(status, {"error": {"message": message, "type": "test_error", "code": code}},
                   headers or {})

    @classmethod
    def slow(cls, seconds: float) -> "Reply":
        """A success that starts only after ``seconds`` (past the client's timeout)."""
        reply = cls.success()
        reply.delay = seconds
        return reply

    @classmethod
    def malformed(cls) -> "Reply":
        """200 with a JSON content type and a body that is not JSON."""
        return cls(200, raw=b'{"id": "chatcmpl-broken", "choices": [')

    @classmethod
    def html(cls) -> "Reply":
        """200 with a web page: what a base URL pointing at the wrong server gives."""
        return cls(200, raw=b"<html><body>Welcome</body></html>", content_type="text/html")


class FakeOpenAIServer(LocalHTTPServer):
    """``http.server`` on 127.0.0.1, a free port, in a daemon thread."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._replies: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()
        super().__init__(_handler_for(self), "fake-openai")

    def push(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order; then the default success."""
        with self._lock:
            self._replies.extend(replies)

    def next_reply(self) -> Reply:
        with self._lock:
            return self._replies.popleft() if self._replies else Reply.success()


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = None
            server.requests.append({"path": self.path, "body": body,
                                    "headers": {k.lower(): v for k, v in self.headers.items()}})
            if not self.path.endswith("/chat/completions"):
                return self._send(Reply.error(404, f"no route {self.path}"), body)
            self._send(server.next_reply(), body)

        def _send(self, reply: Reply, request: Any) -> None:
            if reply.delay and server._closing.wait(reply.delay):
                return
            if reply.status == 200 and reply.raw is None and (request or {}).get("stream"):
                return self._send_events(reply, request)
            data = reply.raw if reply.raw is not None else json.dumps(
                _completion(reply.body, request) if reply.status == 200 else reply.body).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                pass

        def _send_events(self, reply: Reply, request: dict[str, Any]) -> None:
            """The reply as server-sent events in a chunked body, a pause between parts."""
            spec = reply.body
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                for n, event in enumerate(_events(spec, request)):
                    if n and spec.get("gap") and server._closing.wait(spec["gap"]):
                        return
                    data = b"data: " + event.encode() + b"\n\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):  # the client closed the stream
                pass

    return Handler


def _events(spec: dict[str, Any], request: dict[str, Any]) -> Iterator[str]:
    """The data lines of a streamed chat completion: a chunk per part (the first one
    names the role), one with the finish reason, the usage when asked for, ``[DONE]``."""
    whole = _completion(spec, request)
    answer = whole["choices"][0]["message"]["content"]
    parts = spec.get("parts") or [word + " " for word in answer.split(" ")[:-1]] + \
        [answer.split(" ")[-1]]
    frame = {"id": "chatcmpl-test", "object": "chat.completion.chunk",
             "created": whole["created"], "model": whole["model"]}
    for n, part in enumerate(parts):
        delta = {"role": "assistant", "content": part} if n == 0 else {"content": part}
        yield json.dumps({**frame, "choices": [{"index": 0, "delta": delta,
                                                "finish_reason": None}]})
    yield json.dumps({**frame, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if ((request.get("stream_options") or {}).get("include_usage")):
        yield json.dumps({**frame, "choices": [], "usage": whole["usage"]})
    yield "[DONE]"


def _completion(spec: dict[str, Any], request: Any) -> dict[str, Any]:
    messages = (request or {}).get("messages") or [{}]
    answer = spec["answer"] if spec["answer"] is not None else "echo: %s" % messages[-1].get("content")
    prompt, completion = spec["prompt_tokens"], spec["completion_tokens"]
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 1_800_000_000,
            "model": spec["model"] or (request or {}).get("model") or "unknown",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}}


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A running :class:`FakeOpenAIServer` (import this fixture into a test module)."""
    with FakeOpenAIServer() as server:
        yield server
