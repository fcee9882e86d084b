"""An inference server that bills the gateway as harshly as a real one may (issue: money exact in
operation), on its own 127.0.0.1 port (`exacting_upstream`).

- Its tokenizer is the worst a byte-level one can be: one prompt token per UTF-8 byte of every
  string in the messages, prompt or input it receives.
- It obeys every budget field an OpenAI-compatible server might (`max_tokens`,
  `max_completion_tokens`, `n_predict`, `max_new_tokens`, `max_output_tokens`, the largest
  wins), for every choice (`n`, `best_of`) of every prompt of a list, and reports that many
  completion tokens.
- `mode` picks a misbehaviour: `malformed` (a 200 whose `choices` is the number 5),
  `not_an_object` (a 200 whose body is a JSON array), `reasoning` / `tool_calls` (a chat stream
  of `words` deltas carried as `reasoning_content` / tool-call `arguments`, its usage last),
  `responses_reasoning` (the Responses API's `response.reasoning_text.delta` events), `long` (a
  chat stream of `words` content deltas, `chunk_delay` apart). Usage always comes last.
"""

from __future__ import annotations

import json
import time
from http.server import ThreadingHTTPServer
from typing import Any

from dosportal.testing.upstream import FakeUpstream, _Handler, server_fixtures

BUDGET_FIELDS = ("max_tokens", "max_completion_tokens", "n_predict", "max_new_tokens", "max_output_tokens")


def utf8_bytes(value: Any) -> int:
    """The bytes of every string in a value: what a worst-case byte-level tokenizer reads."""
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, dict):
        return sum(utf8_bytes(item) for item in value.values())
    if isinstance(value, list):
        return sum(utf8_bytes(item) for item in value)
    return 0


def generations(body: dict[str, Any]) -> int:
    budget = max([body[name] for name in BUDGET_FIELDS if isinstance(body.get(name), int)] or [16])
    choices = max(body.get("n") or 1, body.get("best_of") or 1)
    prompt = body.get("prompt")
    prompts = len(prompt) if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else 1
    return budget * choices * prompts


class ExactingUpstream(FakeUpstream):
    def __init__(self) -> None:
        ThreadingHTTPServer.__init__(self, ("127.0.0.1", 0), _ExactingHandler)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.words = 20
        self.completion_tokens: int | None = None  # reported instead of the obeyed budget


class _ExactingHandler(_Handler):
    server: ExactingUpstream

    def do_POST(self) -> None:
        body = self.received()
        server = self.server
        prompt = utf8_bytes([body.get(name) for name in ("messages", "prompt", "input", "instructions")])
        completion = server.completion_tokens if server.completion_tokens is not None else generations(body)
        if server.mode == "malformed":
            return self._json(200, {"id": "x", "object": "chat.completion", "choices": 5})
        if server.mode == "not_an_object":
            return self._json(200, [1, 2, 3])
        if body.get("stream"):
            return self._events(body, prompt, completion)
        if self.path.endswith("/responses"):
            usage = {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}
            message = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]}
            return self._json(200, {"id": "resp", "object": "response", "status": "completed", "output": [message],
                                    "model": body.get("model"), "usage": usage})  # fmt: skip
        chat = self.path.endswith("/chat/completions")
        choice = {"index": 0, "finish_reason": "length"}
        choice.update({"message": {"role": "assistant", "content": "ok"}} if chat else {"text": "ok"})
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        return self._json(200, {"id": "c", "object": "chat.completion", "model": body.get("model"),
                                "choices": [choice], "usage": usage})  # fmt: skip

    def _events(self, body: dict[str, Any], prompt: int, completion: int) -> None:
        server, mode = self.server, self.server.mode
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        events: list[dict[str, Any]] = []
        if mode == "responses_reasoning":
            for _ in range(server.words):
                events.append({"type": "response.reasoning_text.delta", "item_id": "r", "output_index": 0,
                               "content_index": 0, "delta": "think "})  # fmt: skip
            usage = {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}
            events.append({"type": "response.completed", "response": {"id": "resp", "object": "response",
                           "status": "completed", "output": [], "usage": usage}})  # fmt: skip
        else:
            for index in range(server.words):
                if mode == "reasoning":
                    delta: dict[str, Any] = {"reasoning_content": "think "}
                elif mode == "tool_calls":
                    function = {"arguments": '{"q": "x"} '} if index else {"name": "search", "arguments": ""}
                    delta = {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": function}]}
                else:
                    delta = {"content": "word "}
                events.append({"id": "s", "object": "chat.completion.chunk", "model": body.get("model"),
                               "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})  # fmt: skip
            events.append({"id": "s", "object": "chat.completion.chunk", "model": body.get("model"),
                           "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})  # fmt: skip
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
                events.append({"id": "s", "object": "chat.completion.chunk", "choices": [], "usage": usage})
        try:
            for index, event in enumerate(events):
                if index and server.chunk_delay:
                    time.sleep(server.chunk_delay)
                kind = f"event: {event['type']}\n".encode() if "type" in event else b""
                self.wfile.write(kind + b"data: " + json.dumps(event).encode() + b"\n\n")
                self.wfile.flush()
            if mode != "responses_reasoning":
                self.wfile.write(b"data: [DONE]\n\n")
            self.server.stream_finished.set()
        except (BrokenPipeError, ConnectionResetError):
            self.server.disconnected.set()
        self.close_connection = True


_exacting_server, exacting_upstream = server_fixtures(
    ExactingUpstream, session_name="_exacting_server", name="exacting_upstream"
)
