"""The development model served stand-alone (deploy/compose.yaml's `upstream` service)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from dosportal.devupstream import app
from dosportal.testing.gateway import BASE_DIR, Gateway, free_port


async def call(method: str, path: str, body: object = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://upstream") as client:
        return await client.request(method, path, json=body)


async def test_it_lists_its_models() -> None:
    response = await call("GET", "/v1/models")
    assert response.status_code == 200
    assert [model["id"] for model in response.json()["data"]] == ["dos-ai", "dos-ai-embed"]


async def test_it_answers_a_chat_with_honest_usage() -> None:
    body = {"model": "dos-ai", "messages": [{"role": "user", "content": "Hello there"}]}
    response = await call("POST", "/v1/chat/completions", body)

    payload = response.json()
    assert response.status_code == 200
    assert payload["model"] == "dos-ai"
    assert payload["choices"][0]["message"]["content"].startswith("Hello! I am the DOS AI development model")
    assert payload["usage"]["completion_tokens"] > 0


async def test_it_streams_server_sent_events_ending_in_done() -> None:
    body = {"model": "dos-ai", "messages": [{"role": "user", "content": "Hi"}], "stream": True, "max_tokens": 3,
            "stream_options": {"include_usage": True}}  # fmt: skip
    response = await call("POST", "/v1/chat/completions", body)

    assert response.headers["content-type"] == "text/event-stream"
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


async def test_it_embeds() -> None:
    response = await call("POST", "/v1/embeddings", {"model": "dos-ai-embed", "input": ["a", "b"]})
    assert [item["index"] for item in response.json()["data"]] == [0, 1]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/chat/completions", "not an object", 400),
        ("POST", "/v1/chat/completions", {"messages": []}, 400),
        ("POST", "/v1/embeddings", {"model": "dos-ai-embed"}, 400),
        ("GET", "/v1/chat/completions", None, 404),
        ("POST", "/admin", {}, 404),
    ],
)
async def test_it_refuses_what_it_does_not_serve(method: str, path: str, body: object, status: int) -> None:
    response = await call(method, path, body)
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "code"}


@pytest.fixture(scope="module")
def dev_upstream() -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "dosportal.devupstream:app", "--port", str(port), "--no-access-log"]
    process = subprocess.Popen(command, cwd=BASE_DIR, env={"PATH": "/usr/bin:/bin", "DEV_UPSTREAM_DELAY": "0"})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/models", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_portal_serves_calls_through_it(
    dev_upstream: str, gateway_factory: Callable[..., Gateway], api_key: str
) -> None:
    gateway = gateway_factory(DOS_AI_UPSTREAM_URL=dev_upstream)

    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": "dos-ai", "messages": [{"role": "user", "content": "Hello!"}]},
        timeout=10,
    )

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].startswith("Hello! I am the DOS AI development model")
