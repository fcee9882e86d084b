"""Deploy checks: Redis over TLS."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks


@checks.register(deploy=True)
def check_redis_tls(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return tls_warnings(settings.REDIS_URL, settings.REDIS_CA_FILE)


def tls_warnings(url: str, ca_file: str) -> list[checks.CheckMessage]:
    if not ca_file:
        return []
    if urlsplit(url).scheme != "rediss":
        return [
            checks.Warning(
                "REDIS_CA_FILE is set but REDIS_URL does not use TLS, so the file is not used.",
                hint="Write REDIS_URL as rediss://host:port/db for a Redis that speaks TLS.",
                id="dosportal.W201",
            )
        ]
    if not Path(ca_file).is_file():
        return [
            checks.Warning(
                f"REDIS_CA_FILE {ca_file!r} is not a file: no connection to Redis can be verified.",
                hint="Point it at the PEM bundle of the CA that signed the Redis server's certificate.",
                id="dosportal.W202",
            )
        ]
    return []
