"""What accounts tells the rest of the project, without importing it."""

from __future__ import annotations

from django.dispatch import Signal

# Sent with `user=` when an account's email counts as verified for the first time or again:
# the owner confirmed it, or an operator made the account. Receivers run inside the caller's
# transaction (billing opens the credit account and grants the starting credit, once).
account_verified = Signal()
