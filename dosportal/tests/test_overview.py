from __future__ import annotations

import pytest

from accounts.models import User
from apikeys.services import api_key_create, api_key_revoke
from billing.models import CreditAccount
from billing.services import credits_grant
from billing.tests.conftest import add_usage
from dosportal.testing.html import text_of
from dosportal.testing.keys import key_for

pytestmark = pytest.mark.django_db


def test_it_shows_the_plan_and_its_limits(client_for, owner: User) -> None:
    response = client_for(owner).get("/")

    assert response.status_code == 200
    content = response.content.decode()
    assert response.context["plan"].label == "Free"
    assert ">60<" in content
    assert ">100,000<" in content


def test_it_shows_an_accounts_own_limits_over_the_plans(client_for, owner: User) -> None:
    owner.plan = "pro"
    owner.requests_per_minute_override = 1000
    owner.save()

    content = client_for(owner).get("/").content.decode()

    assert ">Pro<" in content
    assert ">1,000<" in content
    assert ">2,000,000<" in content


def test_the_quickstart_uses_this_sites_base_url_in_three_forms(client_for, owner: User) -> None:
    content = text_of(client_for(owner).get("/", HTTP_HOST="localhost").content.decode())

    assert 'base_url="http://localhost/v1"' in content  # Python SDK
    assert 'baseURL: "http://localhost/v1"' in content  # JavaScript SDK
    assert "curl http://localhost/v1/chat/completions" in content
    assert 'api_key=os.environ["DOS_AI_API_KEY"]' in content
    assert "apiKey: process.env.DOS_AI_API_KEY" in content
    assert "Authorization: Bearer $DOS_AI_API_KEY" in content


def test_the_quickstart_shows_the_public_api_url_when_one_is_set(client_for, owner: User, settings) -> None:
    settings.DOS_AI_PUBLIC_API_URL = "https://api.example.com/v1"

    content = text_of(client_for(owner).get("/").content.decode())

    assert 'base_url="https://api.example.com/v1"' in content
    assert "curl https://api.example.com/v1/chat/completions" in content


def test_the_quickstart_is_coloured_on_the_server_with_classes_not_styles(client_for, owner: User, settings) -> None:
    settings.DOS_AI_PUBLIC_API_URL = "https://api.example.com/v1?a=<b>"

    content = client_for(owner).get("/").content.decode()

    assert '<span class="tok-kn">import</span><span class="tok-w"> </span><span class="tok-nn">os</span>' in content
    assert '<span class="tok-s2">"https://api.example.com/v1?a=&lt;b&gt;"</span>' in content
    assert "style=" not in content
    # The regex highlighter that used to run in the browser is gone.
    app_js = (settings.BASE_DIR / "static" / "js" / "app.js").read_text()
    assert "highlight" not in app_js
    assert "innerHTML" not in app_js


def test_the_layout_names_the_signed_in_user_and_every_section(client_for, owner: User) -> None:
    content = client_for(owner).get("/").content.decode()

    assert "owner@example.com" in content
    for href, label in [
        ("/", "Overview"),
        ("/keys/", "API keys"),
        ("/usage/", "Usage"),
        ("/billing/", "Billing"),
        ("/settings/", "Settings"),
    ]:
        assert f'href="{href}"' in content
        assert f">{label}</a>" in content
    assert 'href="/admin/"' not in content


def test_staff_see_the_admin_link(client_for, owner: User) -> None:
    owner.is_staff = True
    owner.save()

    content = client_for(owner).get("/").content.decode()

    assert 'href="/admin/"' in content


def test_the_layout_serves_its_own_assets_and_no_cdn(client_for, owner: User) -> None:
    content = client_for(owner).get("/").content.decode()

    assert 'href="/static/css/app.css"' in content
    assert 'src="/static/js/app.js"' in content
    assert 'src="/static/django_htmx/htmx-2.min.js"' in content
    assert "https://" not in content
    assert "//cdn" not in content


def test_the_body_carries_the_csrf_token_for_htmx(client_for, owner: User) -> None:
    content = client_for(owner).get("/").content.decode()

    assert 'hx-headers=\'{"x-csrftoken": "' in content


def test_it_shows_the_credit_balance_from_the_ledger(client_for, owner: User) -> None:
    credits_grant(user=owner, amount_micros=2_500_000, note="Top-up")

    response = client_for(owner).get("/")

    assert response.context["account"].balance_micros == 7_500_000
    assert '<span class="money" title="$7.500000" data-micros="7500000">$7.50</span>' in response.content.decode()


def test_it_invites_a_user_without_keys_to_create_one(client_for, owner: User) -> None:
    content = client_for(owner).get("/").content.decode()

    assert ">Create an API key</a>" in content


def test_it_counts_only_active_keys(client_for, owner: User, outsider: User) -> None:
    api_key_create(owner=owner, name="laptop")
    revoked, _ = api_key_create(owner=owner, name="old")
    api_key_revoke(api_key=revoked)
    api_key_create(owner=outsider, name="not mine")

    response = client_for(owner).get("/")

    assert response.context["active_key_count"] == 1
    assert "You have 1 active key." in response.content.decode()


# --- After the first requests: real numbers ----------------------------------------------


def test_before_any_usage_it_explains_the_first_request(client_for, owner: User) -> None:
    content = client_for(owner).get("/").content.decode()

    assert "how to make a first request" in content
    assert 'class="steps"' in content
    assert 'data-stat="spend-today"' not in content


def test_after_usage_it_shows_spend_today_and_this_month_and_requests_and_tokens_today(
    client_for, owner: User, outsider: User
) -> None:
    production = key_for(owner, "Production backend")
    add_usage(production, days_ago=0, count=3)  # 3 × (1,000 + 500 tokens, 1,250 µUSD)
    add_usage(production, days_ago=1, count=2)
    add_usage(key_for(outsider, "Theirs"), days_ago=0, count=50)

    response = client_for(owner).get("/")

    spend = response.context["spend"]
    assert (spend.today.requests, spend.today.tokens, spend.today.cost_micros) == (3, 4_500, 3_750)
    content = response.content.decode()
    assert "how to make a first request" not in content
    assert 'class="steps"' not in content
    assert (
        'data-stat="spend-today"><span class="money" title="$0.003750" data-micros="3750">&lt;$0.01</span>' in content
    )
    assert '<div class="stat-note" data-stat="usage-today">3 requests · 4,500 tokens</div>' in content
    # This month: today's and yesterday's, unless yesterday was last month.
    month = 3_750 + (2_500 if spend.week[-2].day.month == spend.today.day.month else 0)
    assert spend.month_cost_micros == month
    assert f'data-micros="{month}"' in content
    # The 7-day sparkline: one bar per day with requests.
    assert [day.requests for day in spend.week][-2:] == [2, 3]
    assert content.count('<rect class="bar') == 2


def test_the_active_keys_are_listed_most_recently_used_first(client_for, owner: User) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from apikeys.models import ApiKey

    never = key_for(owner, "Never used")
    old = key_for(owner, "Used last week")
    recent = key_for(owner, "Used a minute ago")
    revoked = key_for(owner, "Revoked")
    ApiKey.objects.filter(pk=old.pk).update(last_used_at=timezone.now() - timedelta(days=7))
    ApiKey.objects.filter(pk=recent.pk).update(last_used_at=timezone.now() - timedelta(minutes=1))
    add_usage(recent, days_ago=0)
    api_key_revoke(api_key=revoked)

    response = client_for(owner).get("/")

    assert [key.name for key in response.context["recent_keys"]] == [
        "Used a minute ago",
        "Used last week",
        "Never used",
    ]
    assert never.pk in [key.pk for key in response.context["recent_keys"]]
    assert "3 active keys, most recently used first" in response.content.decode()


def _set_balance(user: User, micros: int) -> None:
    CreditAccount.objects.filter(user=user).update(balance_micros=micros)


@pytest.fixture
def a_dollar_a_day(owner: User) -> None:
    """7 days × 800 requests × 1,250 µUSD = $7.00 in the week: $1.00 a day on average."""
    production = key_for(owner, "Production backend")
    for days_ago in range(7):
        add_usage(production, days_ago=days_ago, count=800)


def test_it_warns_when_the_credit_lasts_less_than_three_days_at_last_weeks_pace(
    client_for, owner: User, a_dollar_a_day: None
) -> None:
    _set_balance(owner, 2_990_000)

    response = client_for(owner).get("/")

    spend = response.context["spend"]
    assert spend.average_daily_cost_micros == 1_000_000
    assert spend.is_low and spend.days_left == 2
    content = response.content.decode()
    assert "Your credit is running low." in content
    assert "lasts about 2 more days" in content
    assert 'data-micros="1000000">$1.00</span> a day' in content


def test_it_does_not_warn_while_the_credit_lasts_three_days_or_more(
    client_for, owner: User, a_dollar_a_day: None
) -> None:
    _set_balance(owner, 3_000_000)

    response = client_for(owner).get("/")

    assert not response.context["spend"].is_low
    assert "running low" not in response.content.decode()


def test_it_does_not_warn_an_account_that_spends_nothing(client_for, owner: User) -> None:
    _set_balance(owner, 0)

    response = client_for(owner).get("/")

    assert not response.context["spend"].is_low
    assert "running low" not in response.content.decode()
