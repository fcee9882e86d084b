"""The events an endpoint can subscribe to, and the words the dashboard uses for them.

Membership events join this list when organisations land.
"""

from __future__ import annotations

EVENT_TYPES: dict[str, str] = {
    "api_key.created": "A key was created",
    "api_key.revoked": "A key was revoked",
    "api_key.rolled": "A key was rolled (a new secret)",
    "api_key.leaked": "A key was found published and revoked automatically",
    "api_key.seen_in_prompt": "A key was seen in the text of an API request (at most daily per key)",
    "api_key.spend_limit_reached": "A key reached its spend limit",
    "usage.anomaly": "A key's spend in an hour was far above its usual",
    "api_key.suspended": "A key was suspended for unusual spend",
    "balance.low": "The available credit fell below the alert threshold",
    "credit.granted": "Credit was added",
}
TEST_EVENT = "webhook.test"  # "send a test event": sent whatever the subscriptions
