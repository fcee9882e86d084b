"""Unusual spend: an hour far above the key's own baseline alerts once per crossing, and a key
set to pause on unusual spend is suspended (403 key_suspended through /v1) until resumed.

History is seeded as usage records at chosen times and the check runs at chosen moments (its
`now`), so the clock is the test's."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from io import StringIO

import openai
import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from accounts.models import SecurityEvent, User
from apikeys.models import ApiKey
from apikeys.services import api_key_authenticate, api_key_update
from apikeys.tests.conftest import MadeKey
from apikeys.unusual import unusual_spend_check
from billing.alerts import alerts_send
from billing.models import UsageRecord
from webhooks.models import Delivery
from webhooks.services import endpoint_create

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 11, 20, 12, 30, tzinfo=dt.UTC)
TEN_CENTS = 100_000


def use(api_key: ApiKey, at: dt.datetime, *, count: int = 1, cost_micros: int = TEN_CENTS) -> None:
    UsageRecord.objects.bulk_create(
        UsageRecord(
            request_id=f"req_{uuid.uuid4().hex}",
            user_id=api_key.owner_id,
            api_key=api_key,
            endpoint="chat/completions",
            model="dos-ai",
            cost_micros=cost_micros,
            status_code=200,
            created_at=at + dt.timedelta(seconds=i % 3000),
        )
        for i in range(count)
    )


def usual_history(api_key: ApiKey, *, before: dt.datetime, cost_micros: int = TEN_CENTS) -> None:
    """One call an hour for the 15 days before `before`: the key's usual hour."""
    for hours_ago in range(1, 15 * 24 + 1):
        use(api_key, before - dt.timedelta(hours=hours_ago), cost_micros=cost_micros)


def anomaly_mails(mailoutbox) -> list:
    return [m for m in mailoutbox if "nusual spend" in m.subject]


def test_crossing_staying_above_falling_and_crossing_again_alerts_twice(
    owner: User, make_key: Callable[..., MadeKey], mailoutbox, settings
) -> None:
    settings.DOS_AI_WEBHOOKS_ALLOW_PRIVATE = True
    endpoint_create(owner=owner, url="http://127.0.0.1:9/hooks", description="", event_types=["usage.anomaly"])
    api_key, _ = make_key(owner, "Batch")
    usual_history(api_key, before=T0 - dt.timedelta(hours=1))
    runs = []
    for hour, calls in enumerate([20, 20, 2, 20]):  # $2.00 (crossing), $2.00 (above), $0.20 (back), $2.00
        start = T0 + dt.timedelta(hours=hour - 1)
        use(api_key, start, count=calls)
        runs.append(unusual_spend_check(now=start + dt.timedelta(hours=1)))

    assert [(run.alerted, run.rearmed) for run in runs] == [(1, 0), (0, 0), (0, 1), (1, 0)]
    mails = anomaly_mails(mailoutbox)
    assert [m.subject for m in mails] == ['DOS AI: Unusual spend on your API key "Batch"'] * 2
    assert "$2.00 and 20 requests in the last hour, against a usual hour of at most $0.10 and 1 requests" in (
        mails[0].body
    )
    assert "Requests with it are still served." in mails[0].body
    events = SecurityEvent.objects.filter(user=owner, kind=SecurityEvent.Kind.USAGE_ANOMALY)
    assert events.count() == 2
    assert [d.event_type for d in Delivery.objects.order_by("id")] == ["usage.anomaly", "usage.anomaly"]
    api_key.refresh_from_db()
    assert api_key.suspended_at is None  # not asked to pause


def test_a_big_keys_normal_peak_is_not_unusual_but_five_times_it_is(
    owner: User, make_key: Callable[..., MadeKey], mailoutbox
) -> None:
    api_key, _ = make_key(owner, "Big")
    usual_history(api_key, before=T0 - dt.timedelta(hours=1), cost_micros=1_000_000)  # $1.00 an hour
    use(api_key, T0 - dt.timedelta(hours=1), count=3, cost_micros=1_000_000)  # $3.00: under 5 x $1.00

    assert unusual_spend_check(now=T0).alerted == 0

    use(api_key, T0, count=6, cost_micros=1_000_000)  # $6.00
    assert unusual_spend_check(now=T0 + dt.timedelta(hours=1)).alerted == 1


def test_a_young_key_is_judged_by_the_floor_alone(owner: User, make_key: Callable[..., MadeKey], mailoutbox) -> None:
    busy, _ = make_key(owner, "Young and busy")
    quiet, _ = make_key(owner, "Young and quiet")
    for api_key in (busy, quiet):
        use(api_key, T0 - dt.timedelta(days=1))  # a day of history: under three
    use(busy, T0 - dt.timedelta(minutes=50), count=15)  # $1.50, at the floor and over it
    use(quiet, T0 - dt.timedelta(minutes=50), count=5)  # $0.50

    run = unusual_spend_check(now=T0)

    assert run.alerted == 1
    [mail] = anomaly_mails(mailoutbox)
    assert '"Young and busy"' in mail.subject
    assert "(a new key, judged by the floor alone)" in mail.body


def test_the_request_floor_counts_free_calls(owner: User, make_key: Callable[..., MadeKey], mailoutbox) -> None:
    api_key, _ = make_key(owner, "Free calls")
    use(api_key, T0 - dt.timedelta(minutes=55), count=1000, cost_micros=0)

    assert unusual_spend_check(now=T0).alerted == 1


def test_send_alerts_runs_the_check_and_its_output_is_unchanged(
    owner: User, make_key: Callable[..., MadeKey], mailoutbox
) -> None:
    api_key, _ = make_key(owner, "Cron")
    use(api_key, timezone.now() - dt.timedelta(minutes=30), count=15)
    out = StringIO()

    call_command("send_alerts", stdout=out)

    assert out.getvalue().startswith("Low-balance alerts sent:")
    assert len(anomaly_mails(mailoutbox)) == 1
    assert alerts_send().unusual_spend_sent == 0  # once per crossing


def test_a_key_set_to_pause_is_suspended_logged_and_mailed(
    owner: User, make_key: Callable[..., MadeKey], mailoutbox, settings
) -> None:
    settings.DOS_AI_SITE_URL = "https://app.example.com"
    api_key, raw_key = make_key(owner, "Paused")
    api_key_update(api_key=api_key, pause_on_unusual_spend=True)
    use(api_key, T0 - dt.timedelta(minutes=30), count=15)

    run = unusual_spend_check(now=T0)

    assert (run.alerted, run.suspended) == (1, 1)
    api_key.refresh_from_db()
    assert api_key.suspended_at == T0
    assert api_key.suspended_reason.startswith("unusual spend: $1.50 and 15 requests in the last hour")
    assert api_key_authenticate(raw_key) is None
    [mail] = anomaly_mails(mailoutbox)
    assert mail.subject == 'DOS AI: Your API key "Paused" was suspended for unusual spend'
    assert "until you resume it on the API keys page: https://app.example.com/keys/." in mail.body
    assert SecurityEvent.objects.filter(user=owner, kind=SecurityEvent.Kind.KEY_SUSPENDED).count() == 1


def test_the_keys_page_offers_resume_and_only_the_owner_can(
    owner: User, outsider: User, make_key: Callable[..., MadeKey], client_for: Callable[..., Client]
) -> None:
    api_key, raw_key = make_key(owner, "Paused")
    ApiKey.objects.filter(pk=api_key.pk).update(suspended_at=T0, suspended_reason="unusual spend: test")

    page = client_for(owner).get("/keys/").content.decode()
    assert "suspended: unusual spend" in page
    assert f'action="/keys/{api_key.pk}/resume/"' in page
    assert client_for(outsider).post(f"/keys/{api_key.pk}/resume/").status_code == 404
    assert api_key_authenticate(raw_key) is None

    response = client_for(owner).post(f"/keys/{api_key.pk}/resume/")

    assert response.status_code == 302
    assert api_key_authenticate(raw_key) == api_key
    assert SecurityEvent.objects.filter(user=owner, kind=SecurityEvent.Kind.KEY_RESUMED).count() == 1


def test_the_setting_is_on_the_key_form(
    owner: User, make_key: Callable[..., MadeKey], client_for: Callable[..., Client]
) -> None:
    client = client_for(owner)

    client.post("/keys/create/", {"name": "Guarded", "pause_on_unusual_spend": "on"})

    assert ApiKey.objects.get(name="Guarded").pause_on_unusual_spend is True


@pytest.mark.django_db(transaction=True)
def test_a_suspended_key_gets_403_key_suspended_through_v1_until_resumed(
    gateway, api_key: str, api_user: User, client_for: Callable[..., Client]
) -> None:
    key = ApiKey.objects.get(owner=api_user)
    api_key_update(api_key=key, pause_on_unusual_spend=True)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0)
    assert client.models.list().data
    use(key, timezone.now() - dt.timedelta(minutes=30), count=15)
    unusual_spend_check()

    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.models.list()

    assert refused.value.status_code == 403
    assert refused.value.body["code"] == "key_suspended"
    assert refused.value.body["type"] == "permission_error"
    message = refused.value.body["message"]
    assert message.startswith("This API key is suspended (unusual spend: $1.50 and 15 requests in the last hour")
    assert message.endswith("Its owner can resume it on the API keys page of the dashboard.")

    client_for(api_user).post(f"/keys/{key.pk}/resume/")

    assert client.models.list().data
