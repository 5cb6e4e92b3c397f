"""An OpenAI-compatible chat-completions server that enforces rate limits like a provider.

Loopback only, a free port, ``ThreadingHTTPServer`` in a daemon thread: ``worker.py``
processes reach it through :attr:`LimitedChatServer.url`. It answers ``POST
/v1/chat/completions`` (and ``/chat/completions``) after checking two token buckets:

- requests per minute: a request costs 1;
- tokens per minute: a request costs its prompt, estimated as ``ceil(characters of all
  message contents / 4)``, plus its ``max_tokens`` (or ``completion_tokens`` when the
  request names none), which is how OpenAI counts a request against its token limit.

Each bucket refills continuously (``limit / 60`` a second) and holds ``burst_seconds`` of
refill (default one second: rpm=1,200 behaves like "20 requests a second"). A request that
does not fit in both is refused with HTTP 429 in OpenAI's error format and takes nothing.

With ``headers=True`` (default) every answer carries OpenAI's ``x-ratelimit-limit-*``,
``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*`` (time until the bucket is full,
in OpenAI's duration format: ``"120ms"``, ``"1s"``, ``"6m0s"``) for requests and tokens,
and a 429 carries ``Retry-After`` (whole seconds until the bucket has room). With
``headers=False`` it is a local server that only says 429.

Every request is logged as a :class:`Logged` (monotonic time, wall time, status, tokens)
so a test can read the rate the provider saw: :meth:`LimitedChatServer.max_in_window`,
:meth:`LimitedChatServer.count_between`, :meth:`LimitedChatServer.rate_in_window`.

    with LimitedChatServer(rpm=1200) as server:
        ... AGENT_OPENAI_BASE_URL=server.url ...
        assert server.rejected_429 == 0
"""
from __future__ import annotations

import bisect
import json
import math
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, NamedTuple

from tests.support.local_http import LocalHTTPServer

ROUTES = ("/v1/chat/completions", "/chat/completions")
CHARS_PER_TOKEN = 4


def format_duration(seconds: float) -> str:
    """OpenAI's ``x-ratelimit-reset-*`` format: ``"0s"``, ``"120ms"``, ``"1.5s"``,
    ``"6m0s"``, ``"1h2m3s"`` (milliseconds rounded up, so "reset in 0s" means reset now)."""
    ms = math.ceil(max(0.0, seconds) * 1000 - 1e-6)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


def prompt_tokens(messages: Any) -> int:
    """The prompt size a provider would charge, estimated from the characters of every
    message's content (4 characters a token)."""
    if not isinstance(messages, list):
        return 0
    chars = sum(len(m.get("content") or "") for m in messages
                if isinstance(m, dict) and isinstance(m.get("content"), str))
    return math.ceil(chars / CHARS_PER_TOKEN)


class TokenBucket:
    """``per_minute`` units a minute, refilled continuously, holding at most ``capacity``
    (starts full). Not locked: :class:`LimitedChatServer` holds its lock around it."""

    def __init__(self, per_minute: float, capacity: float, now: float):
        if per_minute <= 0 or capacity <= 0:
            raise ValueError("a bucket needs a positive limit and capacity")
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = capacity
        self.level = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        """Add what flowed in since the last look."""
        self.level = min(self.capacity, self.level + max(0.0, now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` fits (0 when it fits now; ``inf`` when it never can)."""
        if cost > self.capacity:
            return math.inf
        return max(0.0, (cost - self.level) / self.rate)

    def take(self, cost: float) -> None:
        """Take ``cost`` (the caller checked :meth:`wait_for`)."""
        self.level -= cost

    def until_full(self) -> float:
        """Seconds until the bucket is full again."""
        return (self.capacity - self.level) / self.rate

    def headers(self, kind: str) -> dict[str, str]:
        """The three ``x-ratelimit-*-<kind>`` headers for this bucket's state."""
        return {f"x-ratelimit-limit-{kind}": str(int(self.per_minute)),
                f"x-ratelimit-remaining-{kind}": str(max(0, math.floor(self.level))),
                f"x-ratelimit-reset-{kind}": format_duration(self.until_full())}


class Logged(NamedTuple):
    """One request as the server saw it."""

    monotonic: float
    wall: float
    status: int
    tokens: int
    label: str = ""       # the start of the last message, to tell requests apart


@dataclass
class Decision:
    """What the buckets said about one request."""

    status: int
    headers: dict[str, str]
    message: str = ""
    prompt: int = 0
    completion: int = 0


class LimitedChatServer(LocalHTTPServer):
    """A rate-limited chat-completions server (see the module docstring).

    ``rpm`` / ``tpm``: the limits (None: no such limit). ``burst_seconds``: how many
    seconds of refill each bucket holds. ``latency``: seconds before each answer (429s
    included: a provider takes time to refuse too). ``completion_tokens``: the answer's
    size when the request sets no ``max_tokens``. ``clock`` / ``wall_clock``: injectable
    time sources (seconds), so a test moves time instead of sleeping.
    """

    def __init__(self, rpm: float | None = None, tpm: float | None = None, *,
                 burst_seconds: float = 1.0, headers: bool = True, latency: float = 0.0,
                 completion_tokens: int = 50, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        self.headers_on = headers
        self.latency = latency
        self.completion_tokens = completion_tokens
        self._clock, self._wall = clock, wall_clock
        now = clock()
        self.requests = TokenBucket(rpm, rpm / 60.0 * burst_seconds, now) if rpm else None
        self.tokens = TokenBucket(tpm, tpm / 60.0 * burst_seconds, now) if tpm else None
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        super().__init__(_handler_for(self), "limited-chat")

    def wait_latency(self) -> bool:
        """Wait out the answer latency; True when the server is stopping meanwhile."""
        return bool(self.latency) and self._closing.wait(self.latency)

    # -- the limit ---------------------------------------------------------------------
    def decide(self, body: Any) -> Decision:
        """Check and take both buckets for one request body; log the outcome."""
        body = body if isinstance(body, dict) else {}
        prompt = prompt_tokens(body.get("messages"))
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        completion = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else self.completion_tokens
        cost = prompt + completion
        with self._lock:
            now = self._clock()
            buckets = [(b, c) for b, c in ((self.requests, 1), (self.tokens, cost)) if b is not None]
            for bucket, _ in buckets:
                bucket.refill(now)
            wait = max((bucket.wait_for(c) for bucket, c in buckets), default=0.0)
            if wait == 0.0:
                for bucket, c in buckets:
                    bucket.take(c)
            status = 200 if wait == 0.0 else 429
            self.log.append(Logged(now, self._wall(), status, cost if status == 200 else 0,
                                   _label(body.get("messages"))))
            headers = self._headers(wait)
        if status == 200:
            return Decision(200, headers, prompt=prompt, completion=completion)
        return Decision(429, headers, self._refusal(wait, cost))

    def _headers(self, wait: float) -> dict[str, str]:
        if not self.headers_on:
            return {}
        headers: dict[str, str] = {}
        for bucket, kind in ((self.requests, "requests"), (self.tokens, "tokens")):
            if bucket is not None:
                headers.update(bucket.headers(kind))
        if wait > 0 and math.isfinite(wait):
            headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return headers

    def _refusal(self, wait: float, cost: int) -> str:
        if math.isinf(wait):
            return (f"Request too large: limit {self.tokens.capacity:g} tokens at once, "
                    f"requested {cost}")
        return f"Rate limit reached: please try again in {format_duration(wait)}"

    # -- what the provider saw ---------------------------------------------------------
    @property
    def accepted(self) -> int:
        """Requests answered 200."""
        return sum(1 for entry in self.snapshot() if entry.status == 200)

    @property
    def rejected_429(self) -> int:
        """Requests answered 429."""
        return sum(1 for entry in self.snapshot() if entry.status == 429)

    def snapshot(self) -> list[Logged]:
        """A copy of the log, oldest first."""
        with self._lock:
            return list(self.log)

    def accepted_times(self) -> list[float]:
        """Monotonic times of the accepted requests, oldest first."""
        return [entry.monotonic for entry in self.snapshot() if entry.status == 200]

    def max_in_window(self, seconds: float) -> int:
        """The most accepted requests in any sliding window ``[t, t + seconds)``."""
        return max_in_window(self.accepted_times(), seconds)

    def count_between(self, start: float, end: float) -> int:
        """Accepted requests with ``start <= time < end`` (monotonic seconds)."""
        times = self.accepted_times()
        return bisect.bisect_left(times, end) - bisect.bisect_left(times, start)

    def rate_in_window(self, seconds: float, start: float | None = None) -> float:
        """Accepted requests a second over ``[start, start + seconds)``; ``start``
        defaults to the first accepted request."""
        times = self.accepted_times()
        if not times:
            return 0.0
        begin = times[0] if start is None else start
        return self.count_between(begin, begin + seconds) / seconds


def max_in_window(times: list[float], seconds: float) -> int:
    """The most of the sorted ``times`` inside any half-open window of length ``seconds``
    (a window starting at an event is enough: moving it to the next event only adds)."""
    best, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= seconds:
            first += 1
        best = max(best, last - first + 1)
    return best


def _label(messages: Any) -> str:
    last = messages[-1] if isinstance(messages, list) and messages else None
    content = last.get("content") if isinstance(last, dict) else None
    return content[:40] if isinstance(content, str) else ""


def _completion(request: dict[str, Any], decision: Decision) -> dict[str, Any]:
    messages = request.get("messages") or [{}]
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    return {"id": "chatcmpl-limited", "object": "chat.completion", "created": 1_800_000_000,
            "model": request.get("model") or "unknown",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant",
                                     "content": "echo: %s" % str(last.get("content"))[:200]}}],
            "usage": {"prompt_tokens": decision.prompt, "completion_tokens": decision.completion,
                      "total_tokens": decision.prompt + decision.completion}}


def _error(status: int, message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "requests" if status == 429 else "invalid_request_error",
                      "param": None, "code": code}}


def _handler_for(server: LimitedChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.split("?")[0] not in ROUTES:
                return self._send(404, _error(404, f"no route {self.path}", "not_found"), {})
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                return self._send(400, _error(400, "body is not JSON", "invalid_json"), {})
            decision = server.decide(body)
            if server.wait_latency():
                return
            reply = (_completion(body, decision) if decision.status == 200
                     else _error(429, decision.message, "rate_limit_exceeded"))
            self._send(decision.status, reply, decision.headers)

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up
                pass

    return Handler
