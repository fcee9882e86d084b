from __future__ import annotations

from django import template

from accounts.useragents import browser_name as _browser_name

register = template.Library()


@register.filter
def browser_name(user_agent: str | None) -> str:
    """`{{ session.user_agent|browser_name }}`: "Chrome on Linux" (see accounts.useragents)."""
    return _browser_name(user_agent or "")


# Backends that only print a message (development): the page says where the mail went.
CONSOLE_BACKENDS = {"dosportal.mail.EmailBackend", "django.core.mail.backends.console.EmailBackend"}


@register.simple_tag
def mail_is_printed() -> bool:
    """True when emails are printed to the console (`make run`'s), not sent."""
    from django.conf import settings

    return settings.EMAIL_BACKEND in CONSOLE_BACKENDS
