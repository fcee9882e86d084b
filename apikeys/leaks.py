"""Keys found published: revoke them at once, tell their owner, and say so to whoever uses them.

Reports come from GitHub's secret-scanning partner program (apikeys.github_scanning, a
signed POST) and from anyone through the public form /report-leaked-key/. Both end in
`leaked_keys_report`, which answers each token in GitHub's feedback format:

- a token that fails our checksum is a false positive, decided without a query;
- a well-formed token that is no key of ours (or a key's old secret past its grace period)
  is a false positive too;
- an active key is revoked through `api_key_revoke` (the gateway's lookup is not cached, so
  every process refuses it from its next request), with the URL it was found at; its owner
  is emailed and the security log records it;
- a key's old secret within a roll's grace period has its grace ended, with the same notice;
- a key that is already revoked is a true positive and nothing else happens, so GitHub
  repeating a report (it retries) revokes, mails and logs nothing twice.

No raw key is stored, logged or mailed: the feedback names tokens by their SHA-256, which is
also what the database stores.

Keys seen in our own traffic (someone pasted a key into a prompt) are found by the gateway
(dosportal.v1.keyscan), which hands their hashes to `key_seen_in_prompt` off the call's path:
such a key is not revoked (it reached only us and the model), but its owner is told, at most
once a day per key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from typing import Literal

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import SecurityEvent
from accounts.notices import notice_send
from accounts.security import SecurityContext, security_event_record
from apikeys.keys import hash_key, is_well_formed
from apikeys.models import LEAKED_URL_MAX_LENGTH, ApiKey
from apikeys.services import api_key_revoke
from webhooks.services import api_key_data, webhook_event_emit

logger = logging.getLogger("apikeys.leaks")

Label = Literal["true_positive", "false_positive"]
SOURCE_MAX_LENGTH = 100
# A key seen in prompts is reported to its owner at most once per this (see key_seen_in_prompt).
SEEN_IN_PROMPT_NOTICE_INTERVAL = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class LeakReport:
    """One token found published: where (`url`), what the reporter calls it (`token_type`)
    and where on the site it was (`source`: GitHub's "content", "commit", "issue"…)."""

    token: str
    token_type: str
    url: str
    source: str = ""


def leaked_keys_report(
    *, reports: list[LeakReport], reporter: str, context: SecurityContext | None = None
) -> list[dict[str, str]]:
    """Act on each report; GitHub's feedback for each, in order:
    `{"token_hash": sha256-hex, "token_type": …, "label": "true_positive" | "false_positive"}`.
    `reporter` names who reported, in the owner's email; `context` is where from (the form's
    client address, for the security log)."""
    context = context or SecurityContext()
    return [
        {
            "token_hash": hashlib.sha256(report.token.encode()).hexdigest(),
            "token_type": report.token_type,
            "label": _act_on(report, reporter, context),
        }
        for report in reports
    ]


def _act_on(report: LeakReport, reporter: str, context: SecurityContext) -> Label:
    if not is_well_formed(report.token):  # a wrong checksum costs no query
        return "false_positive"
    hashed = hash_key(report.token)
    url = report.url[:LEAKED_URL_MAX_LENGTH]
    with transaction.atomic():
        api_key = (
            ApiKey.objects.select_for_update()
            .select_related("owner")
            .filter(Q(hashed_key=hashed) | Q(previous_hashed_key=hashed))
            .first()
        )
        if api_key is None:
            return "false_positive"
        if api_key.hashed_key == hashed:
            acted = api_key_revoke(api_key=api_key, leaked_url=url, context=context)
            what = "key"
        else:
            acted = _end_grace(api_key, url, context)
            what = "old secret"
            if not acted and not api_key.previous_key_valid():
                return "false_positive"  # an old secret past its grace period is no key any more
    if acted:
        logger.warning(
            "API key %s (id %s) found published, reported by %s: %s", api_key.hint, api_key.pk, reporter, url
        )
        notice_send(
            user=api_key.owner,
            template="api_key_leaked",
            context=SecurityContext(),
            extra={
                "key_name": api_key.name,
                "key_hint": api_key.hint,
                "what": what,
                "url": url,
                "source": report.source[:SOURCE_MAX_LENGTH],
                "reporter": reporter,
            },
        )
    return "true_positive"


def _end_grace(api_key: ApiKey, url: str, context: SecurityContext) -> bool:
    """A rolled key's old secret was published: it stops working now (the new one is unharmed)."""
    now = timezone.now()
    if not api_key.previous_key_valid(now):
        return False
    ApiKey.objects.filter(pk=api_key.pk).update(previous_key_expires_at=now)
    api_key.previous_key_expires_at = now
    security_event_record(
        user=api_key.owner,
        kind=SecurityEvent.Kind.KEY_LEAKED,
        context=context,
        detail=f"old secret of {api_key}, found at {url}; its grace period ended",
    )
    webhook_event_emit(
        owner_id=api_key.owner_id,
        event_type="api_key.leaked",
        data={**api_key_data(api_key), "found_at": url, "revoked": False, "old_secret_ended": True},
    )
    return True


@dataclass(frozen=True, slots=True)
class PromptSighting:
    """A well-formed key found in the body of a /v1 call: its SHA-256 (never the key), who
    sent the call (their account and key hint) and from where."""

    hashed_key: str
    caller_owner_id: int
    caller_key_hint: str
    client_ip: str
    seen_at: dt.datetime


def key_seen_in_prompt(sighting: PromptSighting) -> bool:
    """Tell the owner of an active key that it was seen in a prompt; True when this call did.

    The key may be anyone's — the caller's own or another account's. A key that is revoked,
    expired, unknown, or an old secret past its grace period is nothing to report. The call
    that carried it was served: a key pasted into a prompt reached only us and the model, so
    it is not revoked, but it should be treated as exposed.

    At most once a day per key, across processes: `cache.add` (Redis SET NX with a 24 h TTL)
    claims the day's notice, and only the claimant writes the security event, queues the
    `api_key.seen_in_prompt` webhook and mails the owner. The cache rather than a column on
    ApiKey because nothing about the key changes (a reminder, not a state), the hot table and
    its migrations stay untouched, and losing the marker (Redis flushed) costs at most one
    extra notice. With Redis down the cache fails open, and the gateway's own per-process
    memory (dosportal.v1.keyscan) still keeps each process to one notice a day per key.
    """
    now = sighting.seen_at
    hashed = sighting.hashed_key
    api_key = (
        ApiKey.objects.active()
        .select_related("owner")
        .filter(Q(hashed_key=hashed) | Q(previous_hashed_key=hashed, previous_key_expires_at__gt=now))
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now), owner__is_active=True)
        .first()
    )
    if api_key is None:
        return False
    claim = f"apikeys:seen-in-prompt:{api_key.pk}"  # the key's id, never its hash or secret
    if not cache.add(claim, now.isoformat(), timeout=int(SEEN_IN_PROMPT_NOTICE_INTERVAL.total_seconds())):
        return False
    own = api_key.owner_id == sighting.caller_owner_id
    what = "key" if api_key.hashed_key == hashed else "old secret"
    sent_with = f"your key {sighting.caller_key_hint}" if own else "another account's key"
    # The caller's address is the owner's to see only when the call was theirs.
    context = SecurityContext(ip_address=sighting.client_ip or None) if own else SecurityContext()
    try:
        with transaction.atomic():
            security_event_record(
                user=api_key.owner,
                kind=SecurityEvent.Kind.KEY_SEEN_IN_PROMPT,
                context=context,
                detail=f"{what} of {api_key}, in a /v1 request sent with {sent_with}",
            )
            webhook_event_emit(
                owner_id=api_key.owner_id,
                event_type="api_key.seen_in_prompt",
                data={**api_key_data(api_key), "seen_at": now, "old_secret": what != "key", "own_account": own},
            )
    except Exception:
        cache.delete(claim)  # nothing was recorded: the next sighting tries again
        raise
    logger.warning("API key %s (id %s) seen in the body of a /v1 request", api_key.hint, api_key.pk)
    notice_send(
        user=api_key.owner,
        template="api_key_seen_in_prompt",
        context=context,
        extra={
            "key_name": api_key.name,
            "key_hint": api_key.hint,
            "what": what,
            "seen_at": now,
            "sent_with": sent_with,
            "own": own,
            "keys_link": f"{settings.DOS_AI_SITE_URL}/keys/" if settings.DOS_AI_SITE_URL else "",
        },
    )
    return True
