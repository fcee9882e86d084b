"""The portal's settings with WhiteNoise's own (sync-only) middleware: the baseline of bench/middleware.py."""

from __future__ import annotations

from dosportal.settings import *  # noqa: F403

MIDDLEWARE = [
    "whitenoise.middleware.WhiteNoiseMiddleware" if name.endswith("AsyncWhiteNoiseMiddleware") else name
    for name in MIDDLEWARE  # noqa: F405
]
