"""`manage.py refresh_github_scanning_keys`: download GitHub's public keys, never keep a bad copy.

GitHub is played by a real HTTP server on 127.0.0.1 serving a keys document the test made."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apikeys.tests.test_github_secret_scanning import GitHub


class Meta:
    """What the local "api.github.com" answers: a status and a body, changeable per test."""

    def __init__(self) -> None:
        self.status, self.body = 200, b""
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/meta/public_keys/secret_scanning"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        meta = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(meta.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(meta.body)))
                self.end_headers()
                self.wfile.write(meta.body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def meta(settings, tmp_path: Path) -> Iterator[Meta]:
    meta = Meta()
    thread = threading.Thread(target=meta.server.serve_forever, daemon=True)
    thread.start()
    settings.DOS_AI_GITHUB_META_URL = meta.url
    settings.DOS_AI_GITHUB_SECRET_SCANNING_KEYS = str(tmp_path / "keys" / "github.json")
    yield meta
    meta.server.shutdown()
    meta.server.server_close()


def run() -> str:
    stdout = StringIO()
    call_command("refresh_github_scanning_keys", stdout=stdout)
    return stdout.getvalue()


def test_it_saves_the_published_keys_where_the_endpoint_reads_them(meta: Meta, settings) -> None:
    meta.body = GitHub().document()

    out = run()

    target = Path(settings.DOS_AI_GITHUB_SECRET_SCANNING_KEYS)
    assert target.read_bytes() == meta.body
    assert out == f"Saved 1 public key from {meta.url} to {target}.\n"


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (404, b"{}", "answered HTTP 404"),
        (200, b"<html>", "not GitHub's public-keys format"),
        (200, b'{"public_keys": []}', "the document lists no public keys"),
        (200, b'{"public_keys": [{"key_identifier": "a", "key": "not a pem"}]}', "not GitHub's public-keys format"),
    ],
)
def test_a_failed_or_garbled_download_leaves_the_working_file_alone(
    meta: Meta, settings, status: int, body: bytes, message: str
) -> None:
    meta.body = GitHub().document()
    run()
    target = Path(settings.DOS_AI_GITHUB_SECRET_SCANNING_KEYS)
    good = target.read_bytes()
    meta.status, meta.body = status, body

    with pytest.raises(CommandError) as refused:
        run()

    assert message in str(refused.value)
    assert str(refused.value).endswith("the keys file was not changed.")
    assert target.read_bytes() == good


def test_an_unreachable_host_is_one_line(meta: Meta, settings) -> None:
    settings.DOS_AI_GITHUB_META_URL = "http://127.0.0.1:9/keys"

    with pytest.raises(CommandError, match=r"^Could not download http://127.0.0.1:9/keys: .*not changed\.$"):
        run()
