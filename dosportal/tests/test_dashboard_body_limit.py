"""Dashboard and admin bodies over DOS_AI_MAX_DASHBOARD_BODY_BYTES are refused before they are
read (dosportal.asgi), against a live uvicorn: Django would otherwise spool them whole to a
temporary file before its CSRF check could refuse them."""

from __future__ import annotations

import select
import socket

import pytest

from dosportal.testing.rawhttp import read_response

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 4 * 1024 * 1024  # the default
PAGE = (
    '<!doctype html><html lang="en"><meta charset="utf-8"><title>Request too large</title>'
    f"<h1>Request too large</h1><p>This request's body is larger than the limit of {LIMIT} bytes.</p>"
)


def connect(gateway) -> socket.socket:
    host, port = gateway.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


@pytest.mark.parametrize("path", ["/login/", "/admin/login/", "/static/upload"])
def test_a_600_mib_declared_body_is_413_before_a_byte_of_it_is_sent(gateway, path):
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {600 * 1024 * 1024}\r\n\r\n"
    )
    with connect(gateway) as sock:
        sock.sendall(head.encode())  # headers only: the answer must come without the body
        response = read_response(sock)

    assert response.status == 413
    assert response.body.decode() == PAGE
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["connection"] == "close"


def test_a_chunked_upload_is_cut_off_as_soon_as_it_passes_the_limit(gateway):
    head = (
        "POST /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b'--xyz\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n' + b"x" * 64_000
    sent = 0
    with connect(gateway) as sock:
        sock.sendall(head.encode())
        try:
            while sent < 64 * 1024 * 1024 and not select.select([sock], [], [], 0.005)[0]:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                chunk = b"x" * 64_000
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: read its answer
        response = read_response(sock)

    assert response.status == 413
    assert response.body.decode() == PAGE
    # It answered once the limit was passed, long before the client stopped (socket buffers aside).
    assert LIMIT < sent < 2 * LIMIT, sent


def test_a_body_under_the_limit_still_reaches_django(gateway):
    body = b"login=a%40example.com&password=x"
    head = (
        "POST /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with connect(gateway) as sock:
        sock.sendall(head.encode() + body)
        response = read_response(sock)

    assert response.status == 403  # Django's CSRF check, which now only ever sees small bodies
    assert b"CSRF" in response.body
