"""The product documentation's curl example, run as written against a live server."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from dosportal.testing.html import text_of

README = Path(__file__).resolve().parents[3] / "README.md"
DOCUMENTED_BASE = "http://127.0.0.1:8000"

pytestmark = pytest.mark.django_db(transaction=True)


def readme_curl_example() -> str:
    blocks = re.findall(r"```sh\n(curl .*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "the README has exactly one curl example"
    return blocks[0]


def test_the_readme_curl_example_works_verbatim_against_the_development_model(gateway_factory, api_key):
    gateway = gateway_factory(DOS_AI_UPSTREAM_URL="")
    command = readme_curl_example()
    assert DOCUMENTED_BASE in command
    # Only the host and port differ: the test server listens on a free port.
    command = command.replace(DOCUMENTED_BASE, gateway.url)

    result = subprocess.run(
        ["bash", "-c", command],
        env={**os.environ, "DOS_AI_API_KEY": api_key},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    body = json.loads(result.stdout)
    assert body["object"] == "chat.completion"
    assert body["model"] == "dos-ai"
    assert body["choices"][0]["message"]["content"].startswith("Hello! I am the DOS AI development model")
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


def test_the_dashboard_quickstart_shows_the_same_curl_example(client, django_user_model):
    user = django_user_model.objects.create_user("docs@example.com", "x-password-123456")
    client.force_login(user)

    page = client.get("/").content.decode()

    expected = readme_curl_example().replace(DOCUMENTED_BASE, "http://testserver").strip()
    # Coloured by Pygments on the server: the text of the code element, without its spans.
    rendered = re.search(r'<code id="qs-curl-code">(.*?)</code>', page, flags=re.S)

    assert rendered is not None
    assert text_of(rendered.group(1)).strip() == expected
