"""Email notices about an account's security, through Django's email backend.

allauth sends its own for password, email and two-factor changes (ACCOUNT_EMAIL_NOTIFICATIONS);
these are the ones it has no notion of: a new API key, a sign-in from a new device.
Each says what happened, from where, and what to do if it was not you.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.utils import timezone

from accounts.models import User
from accounts.security import SecurityContext

logger = logging.getLogger("accounts.notices")


def notice_send(*, user: User, template: str, context: SecurityContext, extra: dict[str, object]) -> None:
    """Render templates/accounts/email/<template>_subject.txt and _message.txt and mail them to `user`."""
    values = {
        "user": user,
        "ip_address": context.ip_address or "unknown",
        "user_agent": context.user_agent or "unknown",
        "timestamp": timezone.now(),
        **extra,
    }
    subject = render_to_string(f"accounts/email/{template}_subject.txt", values).strip()
    body = render_to_string(f"accounts/email/{template}_message.txt", values)
    try:
        send_mail(settings.ACCOUNT_EMAIL_SUBJECT_PREFIX + subject, body, None, [user.email])
    except OSError:
        # A notice must never undo what it reports (the key exists, the sign-in happened).
        logger.exception("could not send the %r notice to user %s", template, user.pk)
