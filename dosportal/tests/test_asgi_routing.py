"""dosportal.asgi routes by path before any middleware: /v1 bare, /healthz and static lean, the rest full."""

from __future__ import annotations

import socket

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

# Headers only the dashboard's middleware adds (clickjacking, security, sessions/auth Vary).
DASHBOARD_ONLY = ("x-frame-options", "cross-origin-opener-policy")


def test_the_api_and_healthz_skip_the_dashboard_middleware_and_the_dashboard_keeps_it(gateway):
    api = httpx.get(f"{gateway.url}/v1/models")
    health = httpx.get(f"{gateway.url}/healthz")
    page = httpx.get(f"{gateway.url}/login/")

    assert api.status_code == 401
    assert health.status_code == 200
    assert page.status_code == 200
    for header in DASHBOARD_ONLY:
        assert header not in api.headers
        assert header not in health.headers
        assert header in page.headers
    assert "csrftoken" in page.headers.get("set-cookie", "")


@pytest.mark.parametrize("path", ["//v1/models", "/V1/models", "/v1/", "/v1", "/v1/nope", "/V1//chat/completions"])
def test_paths_that_look_like_the_api_get_the_apis_json_404(gateway, path):
    response = httpx.get(f"{gateway.url}{path}")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["code"] == "not_found"
    assert response.headers["x-request-id"].startswith("req_")


def test_a_nul_in_a_model_path_is_a_404_not_a_500(gateway, api_key):
    response = httpx.get(f"{gateway.url}/v1/models/dos%00ai", headers={"Authorization": f"Bearer {api_key}"})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 268435456\r\n\r\n{"
        )
        answer = b""
        while chunk := sock.recv(65536):  # the server answers and closes without reading the body
            answer += chunk

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert body == (
        b'{"error": {"message": "Request body is larger than the limit of 1048576 bytes.", '
        b'"type": "invalid_request_error", "code": "request_too_large"}}'
    )
