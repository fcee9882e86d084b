"""A misbehaving inference server: the fake upstream (dosportal.testing.upstream) with more modes.

Its own server on 127.0.0.1 (`hostile_upstream`), so gateways that point at it
(`DOS_AI_UPSTREAM_URL=hostile_upstream.url`) never disturb the well-behaved one. It records
every request body in `requests`, as the fake upstream does. Extra `mode`s:

- `no_finish`: a stream whose events never carry a finish_reason (then [DONE]).
- `not_sse`: a 200 stream answer that is plain text, not server-sent events.
- `huge_usage`: usage figures past 2^31 (non-streaming and streaming).
- `model_in_error`: a 400 whose message names the model the upstream was asked for.
- `huge_answer`: a non-streaming 200 whose JSON body is 2 MiB (past a gateway's
  DOS_AI_UPSTREAM_MAX_RESPONSE_BYTES set lower), with no Content-Length.
- `endless_event`: a stream whose reply is followed by one event that never ends (more
  bytes than the gateway buffers for one event, no blank line).
"""

from __future__ import annotations

import json
from http.server import ThreadingHTTPServer

from dosportal.testing.upstream import REPLY_WORDS, FakeUpstream, _Handler, server_fixtures
from dosportal.v1.upstream import MAX_EVENT_BYTES

HOSTILE_MODES = ("no_finish", "not_sse", "huge_usage", "model_in_error", "endless_event", "huge_answer")
HUGE_USAGE = {"prompt_tokens": 2**31 + 7, "completion_tokens": 2**40, "total_tokens": 2**40 + 2**31 + 7}


class HostileUpstream(FakeUpstream):
    def __init__(self) -> None:
        ThreadingHTTPServer.__init__(self, ("127.0.0.1", 0), _HostileHandler)
        self.reset()


class _HostileHandler(_Handler):
    server: HostileUpstream

    def do_POST(self) -> None:
        if self.server.mode not in HOSTILE_MODES:
            return super().do_POST()
        body = self.received()
        mode = self.server.mode
        if mode == "model_in_error":
            message = f"The model `{body.get('model')}` does not support tools; {body.get('model')} is text-only."
            return self._json(400, {"error": {"message": message, "type": "invalid_request_error", "code": None}})
        if mode == "huge_answer":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b'{"id": "upstream-huge", "padding": "' + b"x" * 2 * 2**20 + b'"}')
            self.close_connection = True
            return None
        if mode == "huge_usage" and not body.get("stream"):
            text = "".join(REPLY_WORDS)
            return self._json(
                200,
                {
                    "id": "upstream-huge",
                    "object": "chat.completion",
                    "created": 1700000000,
                    "model": body.get("model"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": HUGE_USAGE,
                },
            )
        self.send_response(200)
        self.send_header("Content-Type", "text/plain" if mode == "not_sse" else "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        if mode == "not_sse":
            self.wfile.write(b"Hello from a server that does not speak SSE.\nIt just writes lines.\n")
        else:
            base = {
                "id": "upstream-s",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": body["model"],
            }
            for word in REPLY_WORDS:
                event = {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
                self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            if mode == "endless_event":
                self.wfile.write(b"data: ")
                piece = b"x" * 2**20
                for _ in range(MAX_EVENT_BYTES // len(piece) + 2):
                    self.wfile.write(piece)
            if mode == "huge_usage":
                finish = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                self.wfile.write(b"data: " + json.dumps(finish).encode() + b"\n\n")
                usage = {**base, "choices": [], "usage": HUGE_USAGE}
                self.wfile.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
            self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True
        return None


_hostile_upstream_server, hostile_upstream = server_fixtures(
    HostileUpstream, session_name="_hostile_upstream_server", name="hostile_upstream"
)
