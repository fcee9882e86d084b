"""The project-level pages (overview, headers, the whole dashboard in a browser) use the usage
history the billing tests seed."""

from __future__ import annotations

from billing.tests.conftest import history  # noqa: F401 - a fixture, shared
