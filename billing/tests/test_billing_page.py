"""/billing/: balance and held credit, plan and limits, the plan table, prices, the paginated
ledger, how to add credit — and only ever the signed-in account's own."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.models import User
from accounts.services import account_set_limits, account_set_plan
from apikeys.models import ApiKey
from billing.models import CreditAccount, LedgerEntry, ServedModel
from billing.services import credit_reserve, credits_grant
from billing.tests.conftest import settle_usage
from billing.tests.test_usage_page import html_of, row
from dosportal.testing.keys import key_for


def ledger_rows(html: str) -> list[str]:
    return re.findall(r'<tr data-entry="(\d+)"', html)


def settle_chat(owner: User, request_id: str, *, prompt_tokens: int, completion_tokens: int) -> None:
    settle_usage(
        key_for(owner, f"key for {request_id}"),
        request_id,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )


def test_the_billing_page_requires_login(db: None) -> None:
    response = Client().get("/billing/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/billing/"


def test_a_new_account_shows_its_sign_up_credit(owner: User, client_for) -> None:
    html = html_of(client_for(owner).get("/billing/"))

    assert 'data-balance="5000000"><span class="money" title="$5.000000" data-micros="5000000">$5.00</span><' in html
    assert 'data-held="0"><span class="money" title="$0.000000" data-micros="0">$0.00</span><' in html
    assert 'data-available="5000000"><span class="money" title="$5.000000" data-micros="5000000">$5.00</span><' in html
    entries = ledger_rows(html)
    assert len(entries) == 1
    assert row(html, "data-entry", entries[0])[1:] == ["Grant", "Sign-up credit", "+$5.00", "$5.00"]


def test_balance_held_and_available_are_exact(owner: User, client_for) -> None:
    credits_grant(user=owner, amount_micros=20_000_000, kind=LedgerEntry.Kind.TOPUP, note="Invoice 2026-0142")
    # 617 + 850.5 micro-USD, rounded up: 1,468.
    settle_chat(owner, "req_a", prompt_tokens=1_234, completion_tokens=567)
    credit_reserve(user_id=owner.pk, amount_micros=2_500, request_id="req_in_flight")

    html = html_of(client_for(owner).get("/billing/"))

    # Cents in the headline (cut, never rounded up), the exact amount on hover and in the ledger.
    assert (
        'data-balance="24998532"><span class="money" title="$24.998532" data-micros="24998532">$24.99</span><' in html
    )
    assert 'data-held="2500"><span class="money" title="$0.002500" data-micros="2500">&lt;$0.01</span><' in html
    assert (
        'data-available="24996032"><span class="money" title="$24.996032" data-micros="24996032">$24.99</span><' in html
    )
    newest = ledger_rows(html)[0]
    assert row(html, "data-entry", newest)[1:] == [
        "Usage",
        "1 request with key for req_a (" + ApiKey.objects.get(name="key for req_a").hint + ")",
        "-$0.001468",
        "$24.998532",
    ]
    # The whole column uses the precision its most precise amount needs, so it lines up.
    assert row(html, "data-entry", ledger_rows(html)[1])[1:] == [
        "Top-up",
        "Invoice 2026-0142",
        "+$20.000000",
        "$25.000000",
    ]


def test_an_account_with_no_credit_left_is_told_requests_will_get_402(owner: User, client_for) -> None:
    credits_grant(user=owner, amount_micros=-5_000_000, kind=LedgerEntry.Kind.ADJUSTMENT, note="Trial ended")

    html = html_of(client_for(owner).get("/billing/"))

    assert 'data-balance="0"><span class="money" title="$0.000000" data-micros="0">$0.00</span><' in html
    assert "new requests get 402 until credit is added" in html


def test_it_shows_the_plan_and_its_limits(owner: User, client_for) -> None:
    account_set_plan(user=owner, plan="plus")

    html = html_of(client_for(owner).get("/billing/"))

    assert '<span class="badge badge-primary plan-badge">Plus</span>' in html
    assert 'data-limit="rpm">120<' in html
    assert 'data-limit="tpm">500,000<' in html
    assert "Custom limits" not in html


def test_the_plan_table_lists_free_plus_and_pro_and_marks_the_current_one(owner: User, client_for) -> None:
    account_set_plan(user=owner, plan="pro")

    html = html_of(client_for(owner).get("/billing/"))

    assert row(html, "data-plan", "free") == ["Free", "60", "100,000"]
    assert row(html, "data-plan", "plus") == ["Plus", "120", "500,000"]
    assert row(html, "data-plan", "pro") == ["Pro Current", "300", "2,000,000"]
    assert re.findall(r'<tr data-plan="(\w+)"', html) == ["free", "plus", "pro"]


def test_custom_limits_replace_the_plans_and_say_so(owner: User, client_for) -> None:
    account_set_limits(user=owner, requests_per_minute=1_000, tokens_per_minute=5_000_000)

    html = html_of(client_for(owner).get("/billing/"))

    assert 'data-limit="rpm">1,000<' in html
    assert 'data-limit="tpm">5,000,000<' in html
    assert '<span class="badge badge-warn">Custom limits</span>' in html
    assert "replace the Free plan's 60 requests and 100,000 tokens per minute" in html


def test_it_lists_the_prices_of_active_models(owner: User, client_for) -> None:
    ServedModel.objects.create(
        name="retired", input_price_micros_per_million=1, output_price_micros_per_million=1, is_active=False
    )
    html = html_of(client_for(owner).get("/billing/"))

    assert row(html, "data-model", "dos-ai") == ["dos-ai", "$0.50", "$1.50"]
    assert row(html, "data-model", "dos-ai-embed") == ["dos-ai-embed", "$0.02", "$0.00"]
    assert "retired" not in html


def test_it_says_honestly_how_credit_is_added(owner: User, client_for) -> None:
    html = html_of(client_for(owner).get("/billing/"))

    assert "no online payment" in html
    assert "contact the administrator of this DOS AI deployment" in html
    assert "<strong>owner@example.com</strong>" in html


def test_a_billing_contact_is_shown_when_the_deployment_has_one(owner: User, client_for, settings) -> None:
    settings.DOS_AI_BILLING_CONTACT = "billing@example.com"
    html = html_of(client_for(owner).get("/billing/"))
    assert '<a href="mailto:billing@example.com">billing@example.com</a>' in html


@pytest.fixture
def long_ledger(owner: User) -> list[LedgerEntry]:
    """31 entries: the sign-up credit, then grants of $1.00 … $30.00."""
    return [
        credits_grant(user=owner, amount_micros=dollars * 1_000_000, note=f"Grant #{dollars}")
        for dollars in range(1, 31)
    ]


def test_the_ledger_shows_25_entries_per_page_newest_first(long_ledger, owner: User, client_for) -> None:
    html = html_of(client_for(owner).get("/billing/"))

    entries = ledger_rows(html)
    assert entries == [str(entry.pk) for entry in reversed(long_ledger[5:])]
    assert row(html, "data-entry", entries[0])[2:] == ["Grant #30", "+$30.00", "$470.00"]
    assert "Lines 1–25 of 31" in html
    assert "Page 1 of 2" in html
    assert 'href="?page=2#ledger" rel="next"' in html


def test_the_second_ledger_page_has_the_oldest_entries(long_ledger, owner: User, client_for) -> None:
    html = html_of(client_for(owner).get("/billing/?page=2"))

    entries = ledger_rows(html)
    assert len(entries) == 6
    assert row(html, "data-entry", entries[-1])[1:] == ["Grant", "Sign-up credit", "+$5.00", "$5.00"]
    assert "Lines 26–31 of 31" in html
    assert 'href="?page=1#ledger" rel="prev"' in html


def test_a_page_number_out_of_range_shows_the_last_page(long_ledger, owner: User, client_for) -> None:
    client = client_for(owner)
    assert "Page 2 of 2" in html_of(client.get("/billing/?page=99"))
    assert "Page 1 of 2" in html_of(client.get("/billing/?page=abc"))


def test_an_outsider_never_sees_the_owners_credit_or_ledger(owner: User, outsider: User, client_for) -> None:
    credits_grant(user=owner, amount_micros=70_000_000, kind=LedgerEntry.Kind.TOPUP, note="Owner invoice 77")

    html = html_of(client_for(outsider).get("/billing/"))

    assert 'data-micros="5000000">$5.00<' in html
    assert "Owner invoice 77" not in html
    assert "owner@example.com" not in html
    assert len(ledger_rows(html)) == 1


def test_the_page_reads_without_writing(owner: User, client_for) -> None:
    CreditAccount.objects.filter(user=owner).delete()
    LedgerEntry.objects.filter(user=owner).delete()

    html = html_of(client_for(owner).get("/billing/"))

    assert 'data-micros="0">$0.00<' in html
    assert "No ledger entries yet." in html
    assert not CreditAccount.objects.filter(user=owner).exists()


def test_the_page_costs_a_fixed_number_of_queries_however_long_the_ledger(
    long_ledger, owner: User, client_for, django_assert_max_num_queries
) -> None:
    client = client_for(owner)
    # session, user, credit account, ledger line count, ledger lines, their rows (keys joined), prices
    with django_assert_max_num_queries(7):
        html_of(client.get("/billing/"))
