"""The built-in development model: what answers when no upstream is configured.

It is not a language model. It answers deterministically (the same request
always gets the same reply), streams its reply word by word, honours
`max_tokens`, and reports honest token counts under its own simple tokenizer
(a word or a single punctuation mark is one token), so metering, limits and
billing can be tried end to end on a laptop. /v1/models labels it as such.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
CHUNK_RE = re.compile(r"\S+\s*")
EMBEDDING_DIMENSIONS = 256


def count_tokens(text: str) -> int:
    return len(TOKEN_RE.findall(text))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _reply_for(prompt: str) -> str:
    words = len(prompt.split())
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    return (
        "Hello! I am the DOS AI development model, a built-in stand-in for a real inference server. "
        f"Your message had {words} word{'s' if words != 1 else ''} (fingerprint {digest}). "
        "Set DOS_AI_UPSTREAM_URL to connect a real model."
    )


def _truncate(reply: str, max_tokens: int | None) -> tuple[list[str], str]:
    """The reply as word chunks, cut at max_tokens; and the finish reason."""
    chunks, used = [], 0
    for chunk in CHUNK_RE.findall(reply):
        cost = count_tokens(chunk)
        if max_tokens is not None and used + cost > max_tokens:
            return chunks, "length"
        chunks.append(chunk)
        used += cost
    return chunks, "stop"


def _embedding(text: str, dimensions: int) -> list[float]:
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        block = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((byte - 127.5) / 127.5 for byte in block)
        counter += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


class DevelopmentStream:
    def __init__(self, chunks: list[dict[str, Any]], delay: float):
        self.chunks = chunks
        self.delay = delay

    async def batches(self) -> AsyncIterator[list[bytes]]:
        """One event at a time, `delay` apart."""
        for index, chunk in enumerate(self.chunks):
            if index and self.delay:
                await asyncio.sleep(self.delay)
            yield [json.dumps(chunk, separators=(",", ":")).encode()]

    async def aclose(self) -> None:
        return None


class DevelopmentModel:
    def __init__(self, delay: float = 0.02):
        self.delay = delay

    async def request(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path == "embeddings":
            return self._embeddings(body)
        if path == "responses":
            return self._responses(body)[-1]["response"]
        completion_id, created, model = self._ids(path), int(time.time()), body["model"]
        prompt, prompt_tokens = self._prompt(path, body)
        chunks, finish = _truncate(_reply_for(prompt), self._max_tokens(body))
        text = "".join(chunks)
        usage = self._usage(prompt_tokens, count_tokens(text))
        if path == "chat/completions":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            obj = "text_completion"
        return {
            "id": completion_id,
            "object": obj,
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }

    def _responses(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The Responses API's typed events for one reply; the last carries the finished response."""
        response_id, item_id = f"resp_{uuid.uuid4().hex[:24]}", f"msg_{uuid.uuid4().hex[:24]}"
        value = body.get("input")
        if isinstance(value, str):
            prompt, prompt_tokens = value, count_tokens(value)
        else:
            texts = [_text_of(item.get("content")) for item in value or [] if isinstance(item, dict)]
            prompt = next(reversed(texts), "") if texts else ""
            prompt_tokens = sum(count_tokens(text) + 3 for text in texts)
        prompt_tokens += count_tokens(body.get("instructions") or "")
        max_tokens = body.get("max_output_tokens")
        chunks, finish = _truncate(_reply_for(prompt), max_tokens if isinstance(max_tokens, int) else None)
        text = "".join(chunks)
        base = {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "model": body["model"],
            "output": [],
            "usage": None,
        }
        status = "completed" if finish == "stop" else "incomplete"
        part = {"type": "output_text", "text": text, "annotations": []}
        message = {"id": item_id, "type": "message", "role": "assistant", "status": "completed", "content": [part]}
        usage = {
            "input_tokens": prompt_tokens,
            "output_tokens": count_tokens(text),
            "total_tokens": prompt_tokens + count_tokens(text),
        }
        done = {**base, "status": status, "output": [message], "usage": usage}
        if status == "incomplete":
            done["incomplete_details"] = {"reason": "max_output_tokens"}
        position = {"item_id": item_id, "output_index": 0, "content_index": 0}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": {**base, "status": "in_progress"}},
            {"type": "response.output_item.added", "output_index": 0, "item": {**message, "content": []}},
            {"type": "response.content_part.added", **position, "part": {**part, "text": ""}},
        ]
        events.extend({"type": "response.output_text.delta", **position, "delta": chunk} for chunk in chunks)
        events += [
            {"type": "response.output_text.done", **position, "text": text},
            {"type": "response.content_part.done", **position, "part": part},
            {"type": "response.output_item.done", "output_index": 0, "item": message},
            {"type": f"response.{status}", "response": done},
        ]
        for number, event in enumerate(events):
            event["sequence_number"] = number
        return events

    async def open_stream(self, path: str, body: dict[str, Any]) -> DevelopmentStream:
        if path == "responses":
            return DevelopmentStream(self._responses(body), self.delay)
        completion_id, created, model = self._ids(path), int(time.time()), body["model"]
        prompt, prompt_tokens = self._prompt(path, body)
        chunks, finish = _truncate(_reply_for(prompt), self._max_tokens(body))
        chat = path == "chat/completions"
        base = {
            "id": completion_id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": model,
        }

        def choice(text: str | None, finish_reason: str | None, first: bool = False) -> dict[str, Any]:
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
                if text is not None:
                    delta["content"] = text
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}

        events: list[dict[str, Any]] = []
        if chat:
            events.append({**base, "choices": [choice(None, None, first=True)]})
        events.extend({**base, "choices": [choice(chunk, None)]} for chunk in chunks)
        events.append({**base, "choices": [choice(None if chat else "", finish)]})
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = self._usage(prompt_tokens, count_tokens("".join(chunks)))
            events.append({**base, "choices": [], "usage": usage})
        return DevelopmentStream(events, self.delay)

    @staticmethod
    def _ids(path: str) -> str:
        return ("chatcmpl-" if path == "chat/completions" else "cmpl-") + uuid.uuid4().hex[:24]

    @staticmethod
    def _max_tokens(body: dict[str, Any]) -> int | None:
        value = body.get("max_completion_tokens", body.get("max_tokens"))
        return value if isinstance(value, int) else None

    @staticmethod
    def _prompt(path: str, body: dict[str, Any]) -> tuple[str, int]:
        if path == "chat/completions":
            messages = body.get("messages") or []
            texts = [_text_of(message.get("content")) for message in messages]
            last_user = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
            # 3 tokens of framing per message, as chat templates add role markers.
            return last_user, sum(count_tokens(text) + 3 for text in texts)
        prompt = body.get("prompt", "")
        text = prompt if isinstance(prompt, str) else " ".join(p for p in prompt if isinstance(p, str))
        return text, count_tokens(text)

    @staticmethod
    def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if inputs and all(isinstance(item, int) for item in inputs):
            inputs = [inputs]
        dimensions = body.get("dimensions") if isinstance(body.get("dimensions"), int) else EMBEDDING_DIMENSIONS
        data, prompt_tokens = [], 0
        for index, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(str(token) for token in item)
            prompt_tokens += count_tokens(text) if isinstance(item, str) else len(item)
            vector = _embedding(text, dimensions)
            if body.get("encoding_format") == "base64":
                encoded: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            else:
                encoded = vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        return {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
