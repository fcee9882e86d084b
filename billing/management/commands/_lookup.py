"""Kept for commands written against it: the lookup now lives in accounts.cli."""

from __future__ import annotations

from accounts.cli import user_by_email

__all__ = ["user_by_email"]
