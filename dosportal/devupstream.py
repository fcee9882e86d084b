"""The development model as a stand-alone OpenAI-compatible server, for deploy/compose.yaml.

    uvicorn dosportal.devupstream:app --host 0.0.0.0 --port 8001

It answers `GET /v1/models`, `POST /v1/chat/completions` (also streamed),
`POST /v1/completions` and `POST /v1/embeddings` for any model name, with no key and no
metering: it stands where vLLM or SGLang would, so a portal pointed at it
(`DOS_AI_UPSTREAM_URL=http://upstream:8001/v1`) goes through the whole real upstream path.
It needs no database and no Django settings. Never expose it: it serves anyone.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dosportal.v1.devmodel import DevelopmentModel

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MODELS = [name.strip() for name in os.environ.get("DEV_UPSTREAM_MODELS", "dos-ai,dos-ai-embed").split(",") if name]
MAX_BODY_BYTES = 8 * 1024 * 1024
_model = DevelopmentModel(delay=float(os.environ.get("DEV_UPSTREAM_DELAY", "0.02")))


async def _respond(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


async def _read_json(receive: Receive) -> Any:
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > MAX_BODY_BYTES:
            raise ValueError("body too large")
    return json.loads(body)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path, method = scope["path"].rstrip("/"), scope["method"]
    if method == "GET" and path == "/v1/models":
        created = int(time.time())
        data = [{"id": name, "object": "model", "created": created, "owned_by": "development"} for name in MODELS]
        return await _respond(send, 200, {"object": "list", "data": data})
    endpoint = path.removeprefix("/v1/")
    if method != "POST" or endpoint not in {"chat/completions", "completions", "embeddings"}:
        return await _respond(send, 404, _error(f"No route {method} {scope['path']}", "not_found"))
    try:
        body = await _read_json(receive)
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            raise ValueError("model")
        if body.get("stream") and endpoint != "embeddings":
            return await _stream(send, await _model.open_stream(endpoint, body))
        return await _respond(send, 200, await _model.request(endpoint, body))
    except (ValueError, KeyError, TypeError, AttributeError):
        return await _respond(send, 400, _error("The request is not a valid OpenAI-style request.", "invalid_value"))


async def _stream(send: Send, stream: Any) -> None:
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    async for batch in stream.batches():
        body = b"".join(b"data: " + event + b"\n\n" for event in batch)
        await send({"type": "http.response.body", "body": body, "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
