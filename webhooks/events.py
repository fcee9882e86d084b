"""The events an endpoint can subscribe to, and the words the dashboard uses for them.

Events of the issue still to come (api_key.suspended, api_key.spend_limit_reached through
billing.alerts, usage.anomaly, membership events) join this list when what emits them lands.
"""

from __future__ import annotations

EVENT_TYPES: dict[str, str] = {
    "api_key.created": "A key was created",
    "api_key.revoked": "A key was revoked",
    "api_key.rolled": "A key was rolled (a new secret)",
    "api_key.leaked": "A key was found published and revoked automatically",
    "api_key.spend_limit_reached": "A key reached its spend limit",
    "balance.low": "The available credit fell below the alert threshold",
    "credit.granted": "Credit was added",
}
TEST_EVENT = "webhook.test"  # "send a test event": sent whatever the subscriptions
