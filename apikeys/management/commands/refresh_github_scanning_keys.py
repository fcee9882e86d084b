"""`manage.py refresh_github_scanning_keys [--url URL]`: download GitHub's secret-scanning keys.

Fetches the public keys GitHub signs its secret-scanning reports with (DOS_AI_GITHUB_META_URL,
GitHub's own by default) and writes them to DOS_AI_GITHUB_SECRET_SCANNING_KEYS. The document
is checked before it is written (every key must load as ECDSA P-256) and replaces the old file
atomically, so a failed or garbled download leaves the working file as it was. Run it daily
from cron on a host that can reach GitHub, and once when setting up.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apikeys.github_scanning import MAX_KEYS_FILE_BYTES, KeysFileError, parse_keys

TIMEOUT_SECONDS = 30


class Command(BaseCommand):
    help = "Download the public keys GitHub signs secret-scanning reports with."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--url", help="where to download from (default: DOS_AI_GITHUB_META_URL)")

    def handle(self, *args: Any, url: str | None = None, **options: Any) -> None:
        url = url or settings.DOS_AI_GITHUB_META_URL
        if not url.startswith(("https://", "http://")):
            raise CommandError(f"Not an http(s) URL: {url!r}.")
        headers = {"Accept": "application/json", "User-Agent": "dos-ai-portal"}
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 (the scheme is checked above)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 (scheme checked)
                document = response.read(MAX_KEYS_FILE_BYTES + 1)
        except urllib.error.HTTPError as error:
            raise CommandError(f"{url} answered HTTP {error.code}; the keys file was not changed.") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise CommandError(f"Could not download {url}: {reason}; the keys file was not changed.") from None
        if len(document) > MAX_KEYS_FILE_BYTES:
            raise CommandError(f"{url} sent more than {MAX_KEYS_FILE_BYTES} bytes; the keys file was not changed.")
        try:
            keys = parse_keys(document)
        except KeysFileError as error:
            raise CommandError(f"{url}: {error}; the keys file was not changed.") from None
        target = Path(settings.DOS_AI_GITHUB_SECRET_SCANNING_KEYS)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("wb", dir=target.parent, prefix=".keys-", delete=False) as temporary:
                temporary.write(document)
            os.replace(temporary.name, target)
        except OSError as error:
            raise CommandError(f"Could not write {target}: {error.strerror}.") from None
        self.stdout.write(f"Saved {len(keys)} public key{'s' if len(keys) != 1 else ''} from {url} to {target}.")
