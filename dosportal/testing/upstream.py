"""A real OpenAI-compatible HTTP server on 127.0.0.1, standing in for the inference fleet.

It runs in a thread of the test process, so tests steer it through attributes
(`mode`, `chunk_delay`, `response_delay`) and read what it saw (`requests`,
`disconnected`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest

S = TypeVar("S", bound=ThreadingHTTPServer)
REPLY_WORDS = ["Hello", " from", " the", " fake", " upstream", "."]
PROMPT_TOKENS = 11
COMPLETION_TOKENS = len(REPLY_WORDS)


class FakeUpstream(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # hundreds of concurrent streams connect at once in the concurrency test

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.reset()

    def reset(self) -> None:
        # ok | error500 | busy (503) | context_length | unauthorized | garbage | no_usage
        # | truncate (= cut: streams stop early)
        self.mode = "ok"
        # A request whose body contains this text gets a 500 whatever the mode: a tenant whose
        # requests crash the server (tests of dosportal.v1.pool's health rule).
        self.poison_marker = ""
        self.chunk_delay = 0.0
        self.response_delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self.disconnected = threading.Event()
        self.stream_finished = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeUpstream
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def received(self) -> dict[str, Any]:
        """The request's JSON body, recorded in `requests` (after `response_delay`, if set)."""
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
        if self.server.response_delay:
            time.sleep(self.server.response_delay)
        return body

    def do_POST(self) -> None:
        body = self.received()
        server = self.server
        if server.mode == "error500" or (server.poison_marker and server.poison_marker in json.dumps(body)):
            return self._json(500, {"error": {"message": "CUDA out of memory", "type": "server_error"}})
        if server.mode == "busy":
            return self._json(503, {"error": {"message": "server busy", "type": "server_error"}})
        if server.mode == "unauthorized":
            return self._json(401, {"error": {"message": "bad upstream key", "type": "auth"}})
        if server.mode == "context_length":
            return self._json(
                400,
                {
                    "error": {
                        "message": "This model's maximum context length is 4096 tokens.",
                        "type": "invalid_request_error",
                        "code": "context_length_exceeded",
                    }
                },
            )
        if server.mode == "garbage":
            self.send_response(200)
            self.send_header("Content-Length", "9")
            self.end_headers()
            self.wfile.write(b"not json!")
            return None
        if self.path.endswith("/embeddings"):
            return self._embeddings(body)
        if self.path.endswith("/responses"):
            return self._responses(body)
        if body.get("stream"):
            return self._stream(body)
        return self._complete(body)

    def _usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }

    def _complete(self, body: dict[str, Any]) -> None:
        text = "".join(REPLY_WORDS)
        chat = self.path.endswith("/chat/completions")
        choice = (
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            if chat
            else {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        )
        payload = {
            "id": "upstream-1",
            "object": "chat.completion" if chat else "text_completion",
            "created": 1700000000,
            "model": body.get("model"),
            "choices": [choice],
        }
        if self.server.mode != "no_usage":
            payload["usage"] = self._usage()
        self._json(200, payload)

    def _stream(self, body: dict[str, Any]) -> None:
        chat = self.path.endswith("/chat/completions")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        base = {
            "id": "upstream-s",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": 1700000000,
            "model": body.get("model"),
        }

        def choice(word: str | None, finish: str | None) -> dict[str, Any]:
            if chat:
                return {"index": 0, "delta": {"content": word} if word is not None else {}, "finish_reason": finish}
            return {"index": 0, "text": word or "", "finish_reason": finish}

        events = [{**base, "choices": [choice(word, None)]} for word in REPLY_WORDS]
        events.append({**base, "choices": [choice(None, "stop")]})
        if self.server.mode in ("cut", "truncate"):  # two words, then the connection just ends
            events = events[:2]
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        if wants_usage and self.server.mode != "no_usage":
            events.append({**base, "choices": [], "usage": self._usage()})
        try:
            for index, event in enumerate(events):
                if index and self.server.chunk_delay:
                    time.sleep(self.server.chunk_delay)
                self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                self.wfile.flush()
            if self.server.mode not in ("cut", "truncate"):
                self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.server.stream_finished.set()
        except (BrokenPipeError, ConnectionResetError):
            self.server.disconnected.set()
        self.close_connection = True

    def _responses(self, body: dict[str, Any]) -> None:
        """The Responses API: a response object, or its typed events (no [DONE])."""
        text = "".join(REPLY_WORDS)
        message = {
            "id": "msg_up",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        usage = (
            None
            if self.server.mode == "no_usage"
            else {
                "input_tokens": PROMPT_TOKENS,
                "output_tokens": COMPLETION_TOKENS,
                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            }
        )
        base = {"id": "resp_up", "object": "response", "created_at": 1700000000, "model": body.get("model")}
        done = {**base, "status": "completed", "output": [message], "usage": usage}
        if not body.get("stream"):
            return self._json(200, done)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        position = {"item_id": "msg_up", "output_index": 0, "content_index": 0}
        events = [{"type": "response.created", "response": {**base, "status": "in_progress", "output": []}}]
        events += [{"type": "response.output_text.delta", **position, "delta": word} for word in REPLY_WORDS]
        if self.server.mode == "truncate":  # the stream stops after three words, with no end event
            events = events[:4]
        else:
            events += [{"type": "response.output_text.done", **position, "text": text}]
            events += [{"type": "response.completed", "response": done}]
        try:
            for index, event in enumerate(events):
                if index and self.server.chunk_delay:
                    time.sleep(self.server.chunk_delay)
                self.wfile.write(
                    f"event: {event['type']}\n".encode() + b"data: " + json.dumps(event).encode() + b"\n\n"
                )
                self.wfile.flush()
            self.server.stream_finished.set()
        except (BrokenPipeError, ConnectionResetError):
            self.server.disconnected.set()
        self.close_connection = True

    def _embeddings(self, body: dict[str, Any]) -> None:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vector = [0.25, -0.5, 0.75]
        data = []
        for index, _ in enumerate(inputs):
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack("<3f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        self._json(
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": 4 * len(inputs), "total_tokens": 4 * len(inputs)},
            },
        )


@contextlib.contextmanager
def serving(server: S) -> Iterator[S]:
    """A test server answering from a thread of the test process until the block ends."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def server_fixtures(make: Callable[[], FakeUpstream], *, session_name: str, name: str) -> tuple[Any, Any]:
    """The two fixtures of a test server: `session_name` serves it for the whole session (as it is,
    for session fixtures such as a gateway pointed at it), `name` is that server reset for a test."""

    @pytest.fixture(scope="session", name=session_name)
    def for_the_session() -> Iterator[FakeUpstream]:
        with serving(make()) as server:
            yield server

    @pytest.fixture(name=name)
    def for_one_test(request: pytest.FixtureRequest) -> FakeUpstream:
        server = request.getfixturevalue(session_name)
        server.reset()
        return server

    return for_the_session, for_one_test


_upstream_server, fake_upstream = server_fixtures(FakeUpstream, session_name="_upstream_server", name="fake_upstream")
