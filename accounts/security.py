"""The security log: one service that writes it, and the context a request gives it."""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest

from accounts.models import ANONYMOUS_KINDS, SecurityEvent, User
from dosportal.clientip import client_ip

USER_AGENT_MAX = 300


@dataclass(frozen=True)
class SecurityContext:
    """Where an action came from: who did it, from which address and browser."""

    actor: User | None = None
    ip_address: str | None = None
    user_agent: str = ""

    @classmethod
    def from_request(cls, request: HttpRequest, *, actor: User | None = None) -> SecurityContext:
        """`actor` for steps the owner takes before the request is signed in (a reset link, a confirmation)."""
        if actor is None:
            user = getattr(request, "user", None)
            actor = user if user is not None and user.is_authenticated else None
        return cls(
            actor=actor,
            ip_address=client_ip(request) or None,
            user_agent=request.META.get("HTTP_USER_AGENT", "")[:USER_AGENT_MAX],
        )


def security_event_record(
    *,
    user: User,
    kind: str,
    context: SecurityContext | None = None,
    request: HttpRequest | None = None,
    detail: str = "",
) -> SecurityEvent:
    """Append one event to `user`'s log.

    The actor comes from `context` (or `request`); an action on someone else's account, or
    one with no person behind it (an operator's command), is shown as "an administrator".
    Failed sign-ins are by "someone". `detail` must never hold a secret (name keys by hint).
    """
    if context is None:
        context = SecurityContext.from_request(request) if request is not None else SecurityContext()
    by_administrator = kind not in ANONYMOUS_KINDS and (context.actor is None or context.actor.pk != user.pk)
    return SecurityEvent.objects.create(
        user=user,
        kind=kind,
        actor=context.actor,
        by_administrator=by_administrator,
        ip_address=context.ip_address,
        user_agent=context.user_agent,
        detail=detail[:300],
    )
