"""The ``openai`` backend: any OpenAI-compatible chat-completions server (OpenAI, Ollama,
vLLM, LM Studio, llama.cpp's server) through the official ``openai`` package.

The client never retries (``max_retries=0``): the queue does, with its own policy, leases
and dead letters. Provider errors are translated at this boundary:

- 429 is the provider saying "slow down": :class:`RateLimited`, which defers the task
  without spending an attempt and pauses the backend's limit key for every worker;
- 408 and 5xx, timeouts, unreachable servers and malformed replies are passing
  failures: :class:`RetryableError`, with the provider's ``Retry-After`` as the delay;
- every other 4xx (bad request, wrong key, unknown model) is a :class:`PermanentError`
  carrying the provider's own message, so the task fails at once with a reason.

Given ``on_text`` (the agent handler passes ``task.stream`` when ``AGENT_STREAM`` is on,
the default), the answer streams (``stream=True``, usage from the last chunk through
``stream_options.include_usage``): each piece goes to ``on_text`` as it comes, so readers
see the answer grow, and ``cancelled()`` is asked between pieces: a cancelled task's
stream is closed at once.

``run_async`` is the same call on ``openai.AsyncOpenAI`` for ``async def`` handlers (a
worker keeps a thousand of them in flight on one event loop). Its clients are made on
first use, on the loop that awaits them. Their HTTP transport is the client's own aiohttp
one (``openai.DefaultAioHttpClient``, the ``openai[aiohttp]`` extra) when aiohttp is
installed: at a thousand calls in flight it spends about 40% less CPU a call than the
default httpx transport, which is what lets one process pass 600 calls a second
(bench/async_concurrency.py; figures in the README). Without aiohttp the default
transport is used, one client per HTTPX_CALLS_PER_CLIENT calls in flight: its pool looks
at every one of its connections on each request, so one client with a thousand
connections would spend more CPU per call than the call itself (measured: 6.6 ms a call
at 500 in flight on one client, 2.2 ms on sixteen). aiohttp's pool takes an idle
connection without such a scan, so one of its clients holds as many calls as its
connection limit.

Every answer's ``x-ratelimit-*`` headers (and a 429's ``Retry-After``) are handed to the
caller's ``on_signal`` as an :class:`engine.limits.ProviderSignal`: the worker teaches
them to every worker through the limit key ``limit_key`` (engine/limits.py).

The API key never appears in a message, result or log line: messages are built here from
the status and the provider's text with the key (and anything shaped like a key) masked,
and the driver's exception is not chained (its text would land in the stored traceback).
"""
from __future__ import annotations

import asyncio
import email.utils
import functools
import importlib
import json
import math
import re
import ssl
from typing import Any, Callable, Mapping, Sequence


from .. import clock
from ..config import Settings, mask_url
from ..errors import ConfigurationError, PermanentError, RateLimited, RetryableError
from ..limits import backend_limit_key, signal_from_headers

DEFAULT_MODEL = "gpt-4o-mini"
NO_KEY = "no-key"                 # local servers (Ollama, vLLM...) ignore the key but the client wants one
HTTPX_CALLS_PER_CLIENT = 16       # calls in flight on one AsyncOpenAI client over httpx (see above)
RAW_RESPONSE = {"X-Stainless-Raw-Response": "true"}   # the client then returns headers too
MAX_RETRY_AFTER = 24 * 3600.0     # a provider asking for more than a day is not believed
_KEY_SHAPED = re.compile(r"\b(?:sk|rk|pk|key)-[A-Za-z0-9_*.\-]{6,}")


def _openai() -> Any:
    """The openai package, imported on first use: it takes seconds to import (measured
    here), and only deployments with AGENT_BACKEND=openai need it."""
    return importlib.import_module("openai")


class OpenAIBackend:
    """Answers a query with one chat completion: an optional system prompt, then the query.

    ``client`` (tests) replaces the ``openai.OpenAI`` client the settings describe, and
    ``async_client`` the ``openai.AsyncOpenAI`` one (with ``client`` alone, ``run_async``
    runs ``run`` in a thread).
    """

    name = "openai"
    accepts_timeout = True

    def __init__(self, model: str | None = None, base_url: str | None = None,
                 api_key: str | None = None, timeout: float = 60.0,
                 system_prompt: str | None = None, client: Any = None,
                 async_client: Any = None, stream: bool = True):
        if not api_key and not base_url and client is None:
            raise ConfigurationError(
                "AGENT_BACKEND=openai needs an API key: set AGENT_OPENAI_API_KEY (or "
                "OPENAI_API_KEY), or set AGENT_OPENAI_BASE_URL to a local server that needs none")
        self.model = model or DEFAULT_MODEL
        self.base_url = base_url
        self.timeout = timeout
        self.system_prompt = system_prompt
        self.streams = stream            # the handler hands run() the task's stream sink
        self._secret = api_key or ""
        self.label = f"{mask_url(base_url)}" if base_url else "the OpenAI API"
        self.limit_key = backend_limit_key(self.name, base_url, self.model)
        self._client = client or _openai().OpenAI(api_key=api_key or NO_KEY, base_url=base_url,
                                                  timeout=timeout, max_retries=0)
        self._injected = client is not None and async_client is None
        # [client, calls in flight] each; only touched on the loop's thread.
        self._async_clients: list[list[Any]] = [[async_client, 0]] if async_client else []
        self._async_loop: Any = None         # the loop the async clients were made on

    @classmethod
    def from_settings(cls, settings: Settings) -> "OpenAIBackend":
        """The backend ``AGENT_MODEL``, ``AGENT_OPENAI_BASE_URL``, ``AGENT_OPENAI_API_KEY``,
        ``AGENT_TIMEOUT``, ``AGENT_SYSTEM_PROMPT`` and ``AGENT_STREAM`` describe."""
        return cls(model=settings.agent_model, base_url=settings.openai_base_url,
                   api_key=settings.openai_api_key, timeout=settings.agent_timeout,
                   system_prompt=settings.agent_system_prompt, stream=settings.agent_stream)

    def __repr__(self) -> str:  # no key in it
        return f"OpenAIBackend(model={self.model!r}, base_url={self.label!r})"

    def run(self, query: str, session_id: str | None = None, timeout: float | None = None,
            on_signal: Callable[[Any], None] | None = None,
            on_text: Callable[[str], None] | None = None,
            cancelled: Callable[[], bool] | None = None,
            history: Sequence[Mapping[str, str]] | None = None) -> dict[str, Any]:
        """One chat completion: ``{"answer", "backend", "model", "usage", "finish_reason"}``.
        ``timeout`` (seconds) overrides ``AGENT_TIMEOUT`` for this call; ``on_signal`` is
        told what the answer's headers say of the provider's limits. With ``on_text`` the
        answer streams to it, ``cancelled()`` asked between pieces. ``history`` (the
        session's conversation, engine/agent/conversation.py) goes before the query."""
        client = self._client if timeout is None else self._client.with_options(timeout=timeout)
        messages = self._messages(query, history)
        if on_text is not None:
            return self._json_result(self._streamed(client, messages, timeout, on_signal,
                                                    on_text, cancelled))
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=self.model, messages=messages)
            completion = raw.parse()
        except Exception as exc:
            raise self._translated(exc, timeout) from None
        _tell(on_signal, raw.headers)
        return self._result(completion)

    async def run_async(self, query: str, session_id: str | None = None,
                        timeout: float | None = None,
                        on_signal: Callable[[Any], None] | None = None,
                        on_text: Callable[[str], None] | None = None,
                        cancelled: Callable[[], bool] | None = None,
                        history: Sequence[Mapping[str, str]] | None = None) -> dict[str, Any]:
        """:meth:`run` on the ``AsyncOpenAI`` client, for ``async def`` handlers. A
        cancel or a timeout of the task reaches it as ``CancelledError`` and closes the
        request."""
        if self._injected:
            return await asyncio.to_thread(self.run, query, session_id, timeout, on_signal,
                                           on_text, cancelled, history)
        messages = self._messages(query, history)
        entry = self._async_entry()
        client = entry[0] if timeout is None else entry[0].with_options(timeout=timeout)
        entry[1] += 1
        try:
            if on_text is not None:
                return self._json_result(await self._streamed_async(
                    client, messages, timeout, on_signal, on_text, cancelled))
            # The client's own post, read as plain JSON: the same request, the same errors,
            # without building typed request and response models, which cost a third of
            # the client's CPU per call (measured: 1.1 ms against 1.6 ms a call).
            raw = await client.post("/chat/completions", cast_to=object, body={
                "model": self.model, "messages": messages},
                options={"headers": RAW_RESPONSE})
            reply = raw.parse()
        except Exception as exc:
            raise self._translated(exc, timeout) from None
        finally:
            entry[1] -= 1
        _tell(on_signal, raw.headers)
        return self._json_result(reply)

    # -- streaming ----------------------------------------------------------------------
    def _stream_request(self, messages: list[dict[str, str]], stream_cls: Any) -> dict[str, Any]:
        """The keywords of a streamed ``post``: read as plain JSON chunks, as run_async's."""
        return {"cast_to": object, "options": {"headers": RAW_RESPONSE}, "stream": True,
                "stream_cls": stream_cls, "body": {
                    "model": self.model, "messages": messages, "stream": True,
                    "stream_options": {"include_usage": True}}}

    def _streamed(self, client: Any, messages: list[dict[str, str]], timeout: float | None,
                  on_signal: Any, on_text: Callable[[str], None],
                  cancelled: Callable[[], bool] | None) -> dict[str, Any]:
        """A streamed completion read chunk by chunk: the reply :meth:`_json_result` reads."""
        reply = StreamedReply(on_text, cancelled)
        try:
            raw = client.post("/chat/completions",
                              **self._stream_request(messages, _openai().Stream[object]))
            _tell(on_signal, raw.headers)
            if not _is_event_stream(raw.headers):
                return reply.whole(json.loads(raw.http_response.read()))
            with raw.parse() as chunks:     # leaving it closes the connection
                for chunk in chunks:
                    if reply.add(chunk):
                        break
        except Exception as exc:
            raise self._translated(exc, timeout) from None
        return reply.finished(self.label)

    async def _streamed_async(self, client: Any, messages: list[dict[str, str]],
                              timeout: float | None,
                              on_signal: Any, on_text: Callable[[str], None],
                              cancelled: Callable[[], bool] | None) -> dict[str, Any]:
        """:meth:`_streamed` on an ``AsyncOpenAI`` client."""
        reply = StreamedReply(on_text, cancelled)
        try:
            raw = await client.post("/chat/completions",
                                    **self._stream_request(messages, _openai().AsyncStream[object]))
            _tell(on_signal, raw.headers)
            if not _is_event_stream(raw.headers):
                return reply.whole(json.loads(await raw.http_response.aread()))
            async with raw.parse() as chunks:
                async for chunk in chunks:
                    if reply.add(chunk):
                        break
        except Exception as exc:
            raise self._translated(exc, timeout) from None
        return reply.finished(self.label)

    # -- helpers ------------------------------------------------------------------------
    def _messages(self, query: str,
                  history: Sequence[Mapping[str, str]] | None = None) -> list[dict[str, str]]:
        """The system prompt, the conversation so far (its turns' role and content), the query."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.extend({"role": turn["role"], "content": turn["content"]} for turn in history or ())
        messages.append({"role": "user", "content": query})
        return messages

    def _async_entry(self) -> list[Any]:
        """The least busy AsyncOpenAI client of the running loop (connections belong to
        one loop), a new one when every client has CALLS_PER_CLIENT calls in flight."""
        loop = asyncio.get_running_loop()
        if self._async_loop is not loop:
            if self._async_loop is not None:       # another loop's clients cannot be used here
                self._async_clients = []
            self._async_loop = loop
        entry = min(self._async_clients, key=lambda e: e[1], default=None)
        http_client, calls_per_client = async_http_client()
        if entry is None or entry[1] >= calls_per_client:
            # One TLS context for all of them: each client would otherwise load the CA
            # bundle again (54 ms of CPU a client, measured: 3.4 s for the 63 clients of a
            # worker with 1,000 calls in flight over httpx).
            http = http_client(verify=shared_tls_context())
            entry = [_openai().AsyncOpenAI(api_key=self._secret or NO_KEY, base_url=self.base_url,
                                           timeout=self.timeout, max_retries=0,
                                           http_client=http), 0]
            self._async_clients.append(entry)
        return entry

    def _translated(self, exc: Exception, timeout: float | None) -> Exception:
        """The queue's error for a provider's failure (``exc`` itself when unknown)."""
        openai = _openai()
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc)
        if isinstance(exc, openai.APITimeoutError):
            return RetryableError(f"{self.label} did not answer within "
                                  f"{timeout or self.timeout:g} s (AGENT_TIMEOUT)")
        if isinstance(exc, openai.APIConnectionError):
            return RetryableError(f"could not reach {self.label}: {self._redact(str(exc))}")
        if isinstance(exc, (ValueError, openai.APIResponseValidationError)):  # unparseable JSON
            return RetryableError(f"{self.label} sent a malformed response "
                                  f"({type(exc).__name__})")
        return exc

    def _result(self, completion: Any) -> dict[str, Any]:
        choices = getattr(completion, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise RetryableError(f"{self.label} sent a malformed response (no choices: not a "
                                 "chat-completions reply)")
        usage = getattr(completion, "usage", None)
        counts = {name: getattr(usage, name, None)
                  for name in ("prompt_tokens", "completion_tokens", "total_tokens")} if usage else {}
        return {"answer": choices[0].message.content or "", "backend": self.name,
                "model": getattr(completion, "model", None) or self.model, "usage": counts,
                "finish_reason": getattr(choices[0], "finish_reason", None)}

    def _json_result(self, reply: Any) -> dict[str, Any]:
        """:meth:`_result` for a reply read as plain JSON."""
        choices = reply.get("choices") if isinstance(reply, dict) else None
        first = choices[0] if isinstance(choices, list) and choices else None
        message = first.get("message") if isinstance(first, dict) else None
        if not isinstance(message, dict):
            raise RetryableError(f"{self.label} sent a malformed response (no choices: not a "
                                 "chat-completions reply)")
        usage = reply.get("usage")
        counts = {name: usage.get(name) for name in
                  ("prompt_tokens", "completion_tokens", "total_tokens")} if isinstance(usage, dict) else {}
        return {"answer": message.get("content") or "", "backend": self.name,
                "model": reply.get("model") or self.model, "usage": counts,
                "finish_reason": first.get("finish_reason")}

    def _status_error(self, exc: Any) -> Exception:
        status = exc.status_code
        detail = self._redact(_provider_message(exc))[:1000]
        message = f"{self.label} answered HTTP {status}: {detail}"
        retry_after = retry_after_seconds(exc.response.headers)
        if status == 429 and _error_code(exc) == "insufficient_quota":
            return PermanentError(message)      # billing, not pace: waiting will not help
        if status == 429:
            return RateLimited(message, retry_after, self.limit_key,
                               signal_from_headers(exc.response.headers, retry_after))
        if status == 408 or status >= 500:
            return RetryableError(message, retry_after=retry_after)
        return PermanentError(message)

    def _redact(self, text: str) -> str:
        if self._secret and len(self._secret) >= 4:
            text = text.replace(self._secret, "***")
        return _KEY_SHAPED.sub("***", text)


class StreamedReply:
    """A streamed chat completion put back together from its chunks (read as JSON): each
    piece of the answer goes to ``on_text`` as it comes; the usage is the last chunk's."""

    def __init__(self, on_text: Callable[[str], None], cancelled: Callable[[], bool] | None):
        self.on_text, self.cancelled = on_text, cancelled
        self.parts: list[str] = []
        self.model: str | None = None
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self.seen = False               # a chunk with choices came (a chat-completions stream)
        self.stopped = False            # the task was cancelled: the stream was left

    def add(self, chunk: Any) -> bool:
        """Take one chunk; True when the task was cancelled and the stream must be left."""
        if isinstance(chunk, dict):
            self.model = chunk.get("model") or self.model
            if isinstance(chunk.get("usage"), dict):
                self.usage = chunk["usage"]
            choices = chunk.get("choices")
            first = choices[0] if isinstance(choices, list) and choices else None
            if isinstance(first, dict):
                self.seen = True
                delta = first.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else None
                if isinstance(text, str) and text:
                    self.parts.append(text)
                    self.on_text(text)
                self.finish_reason = first.get("finish_reason") or self.finish_reason
        self.stopped = self.cancelled is not None and self.cancelled()
        return self.stopped

    def whole(self, reply: Any) -> Any:
        """A server that ignored ``stream`` sent one JSON reply: its answer goes on whole."""
        try:
            text = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return reply                # _json_result says what is wrong with it
        if isinstance(text, str) and text:
            self.on_text(text)
        return reply

    def finished(self, label: str) -> dict[str, Any]:
        """The whole reply as the non-streamed JSON one (PermanentError when cancelled:
        the task has ended, the worker drops what this says)."""
        if self.stopped:
            raise PermanentError("the task was cancelled while its answer streamed; the "
                                 f"stream from {label} was closed")
        if not self.seen:
            return {}                   # _json_result calls it malformed
        return {"model": self.model, "usage": self.usage, "choices": [
            {"message": {"content": "".join(self.parts)}, "finish_reason": self.finish_reason}]}


def _is_event_stream(headers: Any) -> bool:
    """Whether a reply is server-sent events (a server may ignore ``stream`` and answer
    with one JSON reply: Ollama's older versions, the queue's own test servers)."""
    return (headers.get("content-type") or "").startswith("text/event-stream")


@functools.lru_cache(maxsize=1)
def async_http_client() -> tuple[Any, int]:
    """The HTTP client class the async path's ``AsyncOpenAI`` clients are built on, and how
    many calls one of them carries: the client's aiohttp transport when aiohttp is
    installed (its connection limit's worth), else its default httpx one (see the module's
    docstring for why that one is kept to HTTPX_CALLS_PER_CLIENT)."""
    openai = _openai()
    try:
        importlib.import_module("aiohttp")
    except ImportError:
        return openai.DefaultAsyncHttpxClient, HTTPX_CALLS_PER_CLIENT
    return openai.DefaultAioHttpClient, openai.DEFAULT_CONNECTION_LIMITS.max_connections


@functools.lru_cache(maxsize=1)
def shared_tls_context() -> ssl.SSLContext:
    """The TLS context every async client in this process shares, made once the way the
    client's HTTP library makes its default one (its CA bundle, SSL_CERT_FILE)."""
    try:
        http = importlib.import_module("httpx2")     # what openai 3 is built on
    except ImportError:
        http = importlib.import_module("httpx")
    return http.create_ssl_context()


def _tell(on_signal: Callable[[Any], None] | None, headers: Any) -> None:
    """Hand what ``headers`` say of the provider's limits to ``on_signal``."""
    if on_signal is not None:
        on_signal(signal_from_headers(headers))


def _error_code(exc: Any) -> str | None:
    """OpenAI's ``{"error": {"code"}}`` (``insufficient_quota``, ``rate_limit_exceeded``)."""
    body = exc.body
    error = body.get("error", body) if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _provider_message(exc: Any) -> str:
    """The provider's own words: OpenAI's ``{"error": {"message"}}``, Ollama's
    ``{"error": "..."}``, or the raw body."""
    body = exc.body
    if isinstance(body, dict):
        text = body.get("message") or body.get("error") or body.get("detail")
        if isinstance(text, dict):
            text = text.get("message")
        if text:
            return str(text)
    if isinstance(body, str) and body.strip():
        return body.strip()
    try:
        return exc.response.text.strip() or exc.response.reason_phrase or "no message"
    except Exception:  # a streamed or closed body: the status says enough
        return "no message"


def retry_after_seconds(headers: Any, now: float | None = None) -> float | None:
    """The delay a ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms`` header
    asks for, in seconds; None when absent or unreadable."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return _bounded(float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return _bounded(float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return _bounded(when.timestamp() - (clock.now_ms() / 1000 if now is None else now))


def _bounded(seconds: float) -> float | None:
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)
