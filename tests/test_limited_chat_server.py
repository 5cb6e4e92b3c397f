"""The rate-limited provider the limiter tests run against behaves like a provider.

Time is a hand-moved clock injected into the server, so refills are exact and nothing
sleeps; requests go over real HTTP (urllib, and the ``openai`` client the backend uses).
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support.limited_chat_server import LimitedChatServer, format_duration, max_in_window


class HandClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def post(url: str, content: str = "hello", path: str = "/chat/completions",
         **extra: Any) -> tuple[int, dict[str, str], dict[str, Any]]:
    """(status, headers with lower-case names, JSON body) of one chat completion."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": content}], **extra})
    request = urllib.request.Request(url + path, data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, json.load(error)


def ratelimit_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("x-ratelimit") or k == "retry-after"}


@pytest.fixture
def clock() -> HandClock:
    return HandClock()


def test_durations_are_written_the_way_openai_writes_them():
    assert [format_duration(s) for s in (0, 0.0004, 0.12, 1, 1.5, 59.25, 360, 3723)] == \
        ["0s", "1ms", "120ms", "1s", "1.5s", "59.25s", "6m0s", "1h2m3s"]


def test_the_request_bucket_refuses_beyond_its_burst_with_retry_after_and_refills(clock):
    with LimitedChatServer(rpm=120, clock=clock) as server:      # 2 a second, holds 2
        first, second, third = (post(server.url) for _ in range(3))
        assert [first[0], second[0], third[0]] == [200, 200, 429]
        assert ratelimit_headers(first[1]) == {"x-ratelimit-limit-requests": "120",
                                               "x-ratelimit-remaining-requests": "1",
                                               "x-ratelimit-reset-requests": "500ms"}
        assert second[1]["x-ratelimit-remaining-requests"] == "0"
        assert second[1]["x-ratelimit-reset-requests"] == "1s"
        assert third[1]["retry-after"] == "1"          # room in 0.5 s, said in whole seconds
        assert third[1]["x-ratelimit-remaining-requests"] == "0"
        assert third[2]["error"]["code"] == "rate_limit_exceeded"

        clock.advance(0.5)                               # one request's worth flowed in
        assert post(server.url)[0] == 200
        clock.advance(0.4)
        assert post(server.url)[0] == 429
        clock.advance(100)                               # a long pause fills it to 2, no more
        assert [post(server.url)[0] for _ in range(3)] == [200, 200, 429]
        assert (server.accepted, server.rejected_429) == (5, 3)


def test_refill_is_continuous_and_the_burst_is_configurable(clock):
    with LimitedChatServer(rpm=600, burst_seconds=3, clock=clock) as server:  # 10/s, holds 30
        assert sum(post(server.url)[0] == 200 for _ in range(32)) == 30
        clock.advance(0.35)
        assert [post(server.url)[0] for _ in range(4)] == [200, 200, 200, 429]


def test_tokens_count_the_prompt_and_the_completion_asked_for(clock):
    with LimitedChatServer(tpm=6000, completion_tokens=50, clock=clock) as server:  # holds 100
        status, headers, body = post(server.url, "x" * 40)      # 10 prompt + 50 = 60
        assert status == 200
        assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 50, "total_tokens": 60}
        assert ratelimit_headers(headers) == {"x-ratelimit-limit-tokens": "6000",
                                              "x-ratelimit-remaining-tokens": "40",
                                              "x-ratelimit-reset-tokens": "600ms"}
        refused = post(server.url, "x" * 40)
        assert refused[0] == 429 and refused[1]["retry-after"] == "1"
        small = post(server.url, "x" * 40, max_tokens=30)       # 10 + 30 fits in 40
        assert small[0] == 200 and small[2]["usage"]["completion_tokens"] == 30
        assert small[1]["x-ratelimit-remaining-tokens"] == "0"
        assert [entry.tokens for entry in server.snapshot()] == [60, 0, 40]


def test_a_request_larger_than_the_bucket_is_refused_without_a_retry_time(clock):
    with LimitedChatServer(tpm=600, clock=clock) as server:     # holds 10 tokens
        status, headers, body = post(server.url, "x" * 400)
        assert status == 429 and "retry-after" not in headers
        assert "Request too large" in body["error"]["message"]


def test_with_headers_off_a_refusal_is_a_bare_429(clock):
    with LimitedChatServer(rpm=60, tpm=60_000, headers=False, clock=clock) as server:
        ok, refused = post(server.url), post(server.url)
        assert ok[0] == 200 and ratelimit_headers(ok[1]) == {}
        assert refused[0] == 429 and ratelimit_headers(refused[1]) == {}
        assert refused[2]["error"]["code"] == "rate_limit_exceeded"


def test_concurrent_requests_never_take_more_than_the_bucket_holds(clock):
    with LimitedChatServer(rpm=1200, clock=clock) as server:    # holds 20, clock stands still
        with ThreadPoolExecutor(25) as pool:
            statuses = list(pool.map(lambda _: post(server.url)[0], range(60)))
        assert statuses.count(200) == 20 and statuses.count(429) == 40
        assert (server.accepted, server.rejected_429) == (20, 40)


def test_routes_with_and_without_v1_and_404_elsewhere(clock):
    with LimitedChatServer(rpm=600, clock=clock) as server:
        base = server.url.removesuffix("/v1")
        assert server.url.endswith("/v1")
        assert post(base, path="/chat/completions")[0] == 200
        assert post(base, path="/v1/chat/completions")[0] == 200
        assert post(base, path="/v1/completions")[0] == 404
        assert server.accepted == 2


def test_the_openai_client_reads_answers_usage_headers_and_429s(clock):
    openai = pytest.importorskip("openai")
    with LimitedChatServer(rpm=60, completion_tokens=7, clock=clock) as server:
        client = openai.OpenAI(base_url=server.url, api_key="test-key", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "12345678"}])
        completion = raw.parse()
        assert completion.choices[0].message.content == "echo: 12345678"
        assert (completion.usage.prompt_tokens, completion.usage.total_tokens) == (2, 9)
        assert raw.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert refused.value.response.headers["retry-after"] == "1"
        client.close()


def test_answers_wait_out_the_configured_latency():
    with LimitedChatServer(rpm=600, latency=0.05) as server:
        started = time.monotonic()
        assert post(server.url)[0] == 200
        assert time.monotonic() - started >= 0.05


def test_the_window_helpers_count_accepted_requests_only(clock):
    with LimitedChatServer(rpm=60, clock=clock) as server:       # 1 a second, holds 1
        for step in (0.0, 0.0, 1.0, 1.5, 0.5, 1.0, 3.0):         # accepted at 0, 1, 2.5, 4, 7
            clock.advance(step)
            post(server.url)
        log = server.snapshot()
        assert [entry.status for entry in log] == [200, 429, 200, 200, 429, 200, 200]
        assert all(abs(entry.wall - time.time()) < 60 for entry in log)
        assert server.max_in_window(1.0) == 1       # half-open: 0 and 1 are not in one second
        assert server.max_in_window(2.5) == 2
        assert server.max_in_window(4.0) == 3
        assert server.max_in_window(4.1) == 4
        start = log[0].monotonic
        assert server.count_between(start, start + 2.5) == 2
        assert server.rate_in_window(4.0) == pytest.approx(0.75)     # 0, 1, 2.5 in 4 s


def test_max_in_window_finds_the_densest_window_anywhere():
    assert max_in_window([], 1.0) == 0
    assert max_in_window([0.0, 0.5, 1.0, 1.2, 2.5], 1.0) == 3
    assert max_in_window([0.0, 1.0, 2.0, 3.0], 1.0) == 1
    assert max_in_window([0.0, 1.0, 2.0, 3.0], 1.0001) == 2
    times = sorted(i * 0.01 for i in range(100)) + [5.0 + i * 0.001 for i in range(150)]
    assert max_in_window(times, 1.0) == 150


def test_the_log_is_thread_safe_under_a_flood():
    with LimitedChatServer(rpm=6000, burst_seconds=0.5) as server:
        with ThreadPoolExecutor(20) as pool:
            statuses = list(pool.map(lambda _: post(server.url)[0], range(200)))
        assert len(server.snapshot()) == 200
        assert server.accepted == statuses.count(200) and server.rejected_429 == statuses.count(429)
