"""Fixtures for the account tests: a superuser for the admin, and a frozen clock for the throttle."""

from __future__ import annotations

import types
from collections.abc import Callable

import pytest

# A fixed instant for django-ratelimit's clock, so a test never straddles the edge of a
# counting window (which would reset the counter half-way and make the test flaky).
FROZEN_NOW = 1_800_000_000.0


@pytest.fixture
def frozen_ratelimit_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Freeze the clock django-ratelimit reads (and only that one); call it to move time."""
    import django_ratelimit.core

    clock = types.SimpleNamespace(time=lambda: FROZEN_NOW)
    monkeypatch.setattr(django_ratelimit.core, "time", clock)

    def move_to(timestamp: float) -> None:
        clock.time = lambda: timestamp

    return move_to
