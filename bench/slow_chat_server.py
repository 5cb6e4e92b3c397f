"""A chat-completions server that answers every request after a fixed delay, for the async
concurrency benchmark: ``python -m bench.slow_chat_server PORT [DELAY_SECONDS]``.

A request with ``"stream": true`` is answered as a provider streams: server-sent events,
the answer's PIECES pieces spread over the delay, then the usage and ``[DONE]``.

Loopback only. asyncio streams with keep-alive, so a thousand requests in flight cost the
server a thousand coroutines, not a thousand threads: the benchmark measures the worker,
not this stand-in. It speaks just enough of the protocol for the ``openai`` client.
"""
from __future__ import annotations

import asyncio
import json
import sys

BODY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_800_000_000,
    "model": "bench-model",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "A benchmark answer."}}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}}).encode()
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(BODY))
STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
PIECES = 10


def _event(chunk: dict) -> bytes:
    """One server-sent event as one HTTP chunk."""
    data = b"data: " + json.dumps(chunk).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _piece(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return _event({"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                   "created": 1_800_000_000, "model": "bench-model", "choices": choices,
                   "usage": usage})


async def stream_answer(writer: asyncio.StreamWriter, delay: float) -> None:
    """The answer as PIECES events over ``delay`` seconds, then its usage and [DONE]."""
    writer.write(STREAM_HEAD)
    for n in range(PIECES):
        await asyncio.sleep(delay / PIECES)
        writer.write(_piece({"content": f"piece {n} "}, "stop" if n == PIECES - 1 else None))
    writer.write(_piece({}, usage={"prompt_tokens": 10, "completion_tokens": PIECES,
                                   "total_tokens": 10 + PIECES}))
    data = b"data: [DONE]\n\n"
    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
    await writer.drain()


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           delay: float) -> None:
    """Answer each request on the connection after ``delay`` seconds, until it closes."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length) if length else b"{}"
            if json.loads(body).get("stream"):
                await stream_answer(writer, delay)
                continue
            await asyncio.sleep(delay)
            writer.write(HEAD + BODY)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def ask_raw(port: int, query: str) -> str:
    """One chat completion over a plain asyncio connection (no client library): the
    benchmark's measure of what the queue costs apart from the ``openai`` package."""
    body = json.dumps({"model": "bench-model",
                       "messages": [{"role": "user", "content": query}]}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        reply = json.loads(await reader.readexactly(length))
    finally:
        writer.close()
    return reply["choices"][0]["message"]["content"]


async def main(port: int, delay: float) -> None:
    server = await asyncio.start_server(lambda r, w: serve_connection(r, w, delay),
                                        "127.0.0.1", port, backlog=4096)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 1.0))
