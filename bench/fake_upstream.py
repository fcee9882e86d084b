"""A fast fake OpenAI-compatible upstream for benchmarks: raw asyncio, keep-alive, no framework.

    python bench/fake_upstream.py PORT [--chunks 50 --interval 0.02]

Non-streaming requests get a fixed chat completion at once; `"stream": true` requests get
`--chunks` SSE chunks `--interval` seconds apart, then a usage chunk and [DONE].
"""

from __future__ import annotations

import argparse
import asyncio
import json

# The one answer of the benchmark: the upstream's, and the floor's (bench/floor.py).
ANSWER = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1,
    "model": "bench-upstream",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there!"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
}
COMPLETION = json.dumps(ANSWER).encode()


def chunk(content: str | None, finish: str | None = None, usage: dict | None = None) -> bytes:
    payload: dict = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "bench-upstream"}
    payload["choices"] = (
        [] if usage else [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}]
    )
    if usage:
        payload["usage"] = usage
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunks: int, interval: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length) if length else b""
            if b"/models" in head.split(b"\r\n")[0]:
                data = b'{"object":"list","data":[{"id":"bench-upstream","object":"model"}]}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(data), data)
                )
            elif b'"stream":true' in body.replace(b" ", b""):
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                for index in range(chunks):
                    event = chunk("tok ", "stop" if index == chunks - 1 else None)
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                    await writer.drain()
                    await asyncio.sleep(interval)
                for event in (
                    chunk(None, usage={"prompt_tokens": 9, "completion_tokens": chunks, "total_tokens": 9 + chunks}),
                    b"data: [DONE]\n\n",
                ):
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(COMPLETION), COMPLETION)
                )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args()
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args.chunks, args.interval), "127.0.0.1", args.port, backlog=4096
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
