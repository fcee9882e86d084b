from __future__ import annotations

from django import template

from accounts.useragents import browser_name as _browser_name

register = template.Library()


@register.filter
def browser_name(user_agent: str | None) -> str:
    """`{{ session.user_agent|browser_name }}`: "Chrome on Linux" (see accounts.useragents)."""
    return _browser_name(user_agent or "")
