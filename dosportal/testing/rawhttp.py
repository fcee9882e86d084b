"""A raw HTTP/1.1 client for tests that need bytes no well-behaved client sends.

httpx and http.client normalise paths, refuse control characters and always send the
body they are given; these helpers write the request line, headers and body as they are,
so a test can send `//v1/models`, `%00`, a declared Content-Length with no body behind it,
or a chunked body that keeps growing.
"""

from __future__ import annotations

import json
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names; the last value wins
    body: bytes
    elapsed: float = 0.0
    header_lines: list[tuple[str, str]] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)


def _read_head(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], list[tuple[str, str]]]:
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before the response head: {bytes(buffer)!r}")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    buffer[:] = rest
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    pairs = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        pairs.append((name.strip().lower(), value.strip()))
    return status, dict(pairs), pairs


def read_response(sock: socket.socket, *, head_only: bool = False) -> RawResponse:
    """One response from `sock`: its body by Content-Length, chunked encoding, or until close."""
    buffer = bytearray()
    status, headers, pairs = _read_head(sock, buffer)
    if head_only:
        return RawResponse(status, headers, b"", header_lines=pairs)
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(buffer) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
        return RawResponse(status, headers, bytes(buffer[:length]), header_lines=pairs)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            while b"\r\n" not in buffer:
                buffer += sock.recv(65536)
            size_line, _, rest = bytes(buffer).partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            buffer[:] = rest
            while len(buffer) < size + 2:
                buffer += sock.recv(65536)
            body += buffer[:size]
            buffer[:] = buffer[size + 2 :]
            if size == 0:
                return RawResponse(status, headers, bytes(body), header_lines=pairs)
    while chunk := sock.recv(65536):
        buffer += chunk
    return RawResponse(status, headers, bytes(buffer), header_lines=pairs)


def _send_until_answered(sock: socket.socket, body: bytes, piece: int = 16_384) -> int:
    """Send `body` in pieces, stopping as soon as the server answers (a 413 comes before the
    body is read: writing on would only meet a reset connection). Returns the bytes sent."""
    sent = 0
    try:
        while sent < len(body):
            if select.select([sock], [], [], 0)[0]:
                break
            sock.sendall(body[sent : sent + piece])
            sent += piece
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed: its answer is waiting to be read
    return min(sent, len(body))


def raw_request(
    url: str,
    method: str,
    target: bytes | str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 30.0,
) -> RawResponse:
    """Send one request exactly as given (target unnormalised, Content-Length set from `body`)."""
    host, port = url.removeprefix("http://").split(":")
    target_bytes = target.encode("latin-1") if isinstance(target, str) else target
    lines = [method.encode() + b" " + target_bytes + b" HTTP/1.1", f"Host: {host}:{port}".encode()]
    sent_headers = {"Connection": "close", "Content-Length": str(len(body)), **(headers or {})}
    lines += [f"{name}: {value}".encode("latin-1") for name, value in sent_headers.items()]
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        _send_until_answered(sock, body)
        response = read_response(sock, head_only=method == "HEAD")
    response.elapsed = time.monotonic() - started
    return response
