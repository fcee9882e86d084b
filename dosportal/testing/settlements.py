"""The one way tests write a Settlement: a finished call, as the gateway reports it."""

from __future__ import annotations

from typing import Any

from billing.settlement import Settlement

# What tests seldom vary: a chat call of dos-ai that succeeded, not streamed, with no request id
# of the client's, and nothing priced or counted on the output side.
CALL_DEFAULTS: dict[str, Any] = {
    "client_request_id": "",
    "endpoint": "chat/completions",
    "model": "dos-ai",
    "output_price_micros_per_million": 0,
    "completion_tokens": 0,
    "status_code": 200,
    "streamed": False,
}


def call_settlement(**fields: Any) -> Settlement:
    """A Settlement with `fields` (by its own field names) over CALL_DEFAULTS; charged when its
    status is 200, as the gateway charges only a call that succeeded."""
    fields = {**CALL_DEFAULTS, **fields}
    return Settlement(charge=fields["status_code"] == 200, **fields)
