"""Admin: prices in dollars, read-only credit with a grant form and action that go through
credits_grant, and append-only ledger and usage lists with their filters."""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.test import Client

from accounts.models import User
from billing.models import CreditAccount, LedgerEntry, ServedModel, UsageRecord
from billing.services import credit_reserve, credits_grant
from billing.tests.conftest import History

# The model's upstream endpoints are an inline formset: a post carries its management form.
NO_ENDPOINTS = {"endpoints-TOTAL_FORMS": "0", "endpoints-INITIAL_FORMS": "0"}


def page(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


# --- ServedModel ----------------------------------------------------------------


def test_the_model_list_shows_prices_in_usd_per_million_tokens(admin_client: Client) -> None:
    html = page(admin_client.get("/admin/billing/servedmodel/"))

    dos_ai = re.search(r"<tr>.*?>dos-ai</a>.*?</tr>", html, re.S).group(0)
    assert '<td class="field-input_price">$0.50</td>' in dos_ai
    assert '<td class="field-output_price">$1.50</td>' in dos_ai


def test_an_admin_edits_prices_in_dollars_and_they_are_stored_in_micro_dollars(admin_client: Client) -> None:
    served = ServedModel.objects.get(name="dos-ai")
    form = page(admin_client.get(f"/admin/billing/servedmodel/{served.pk}/change/"))
    assert 'name="input_price_usd" value="0.500000"' in form
    assert "input 500,000 · output 1,500,000" in form

    response = admin_client.post(
        f"/admin/billing/servedmodel/{served.pk}/change/",
        {
            "name": "dos-ai",
            "upstream_model": "",
            "kind": "chat",
            "is_active": "on",
            "input_price_usd": "0.75",
            "output_price_usd": "2.000001",
            **NO_ENDPOINTS,
        },
    )

    assert response.status_code == 302
    served.refresh_from_db()
    assert (served.input_price_micros_per_million, served.output_price_micros_per_million) == (750_000, 2_000_001)


def test_a_price_with_more_than_six_decimals_or_below_zero_is_refused(admin_client: Client) -> None:
    served = ServedModel.objects.get(name="dos-ai")
    html = page(
        admin_client.post(
            f"/admin/billing/servedmodel/{served.pk}/change/",
            {
                "name": "dos-ai",
                "kind": "chat",
                "input_price_usd": "0.0000001",
                "output_price_usd": "-1",
                **NO_ENDPOINTS,
            },
        )
    )
    assert "Ensure that there are no more than 6 decimal places." in html
    assert "Ensure this value is greater than or equal to 0." in html
    served.refresh_from_db()
    assert served.input_price_micros_per_million == 500_000


def test_an_admin_adds_a_model_with_its_prices(admin_client: Client) -> None:
    response = admin_client.post(
        "/admin/billing/servedmodel/add/",
        {"name": "llama-70b", "upstream_model": "meta/llama", "kind": "chat", "input_price_usd": "0.9",
         "output_price_usd": "0.9", "is_active": "on", **NO_ENDPOINTS},
    )  # fmt: skip
    assert response.status_code == 302
    added = ServedModel.objects.get(name="llama-70b")
    assert (added.upstream_name, added.input_price_micros_per_million) == ("meta/llama", 900_000)


# --- CreditAccount and granting ---------------------------------------------------


def test_credit_accounts_are_listed_read_only_in_usd(admin_client: Client, owner: User) -> None:
    credit_reserve(user_id=owner.pk, amount_micros=1_500, request_id="req_in_flight")
    html = page(admin_client.get("/admin/billing/creditaccount/"))

    owner_row = re.search(r"<tr>.*?owner@example\.com.*?</tr>", html, re.S).group(0)
    assert '<td class="field-balance">$5.000000</td>' in owner_row
    assert '<td class="field-held">$0.001500</td>' in owner_row
    assert '<td class="field-available">$4.998500</td>' in owner_row
    assert "Add credit account" not in html
    assert 'value="delete_selected"' not in html
    assert 'value="grant_credits"' in html


def test_the_credit_account_page_is_read_only_and_links_to_the_grant_form(admin_client: Client, owner: User) -> None:
    html = page(admin_client.get(f"/admin/billing/creditaccount/{owner.pk}/change/"))

    assert f'href="/admin/billing/creditaccount/{owner.pk}/grant/"' in html
    assert "$5.000000 — equals the balance" in html
    assert f'href="/admin/billing/ledgerentry/?user__id__exact={owner.pk}">1 entry</a>' in html
    assert 'name="_save"' not in html
    assert admin_client.post(f"/admin/billing/creditaccount/{owner.pk}/change/", {}).status_code == 403
    assert admin_client.get("/admin/billing/creditaccount/add/").status_code == 403
    assert admin_client.get(f"/admin/billing/creditaccount/{owner.pk}/delete/").status_code == 403


def test_the_grant_form_writes_a_ledger_entry_through_the_service(
    admin_client: Client, superuser: User, owner: User
) -> None:
    url = f"/admin/billing/creditaccount/{owner.pk}/grant/"
    assert "Grant credits to owner@example.com" in page(admin_client.get(url))

    response = admin_client.post(url, {"amount_usd": "20", "kind": "topup", "note": "Invoice 2026-0142"})

    assert response.status_code == 302
    assert response["Location"] == f"/admin/billing/creditaccount/{owner.pk}/change/"
    entry = LedgerEntry.objects.filter(user=owner).first()
    assert (entry.kind, entry.amount_micros, entry.balance_after_micros, entry.note, entry.created_by) == (
        "topup",
        20_000_000,
        25_000_000,
        "Invoice 2026-0142",
        superuser,
    )
    assert CreditAccount.objects.get(user=owner).balance_micros == 25_000_000
    assert LogEntry.objects.get().change_message == f"Top-up $20.000000 (ledger entry {entry.pk})"
    follow = page(admin_client.get(response["Location"]))
    assert "Top-up of $20.000000 recorded for owner@example.com. New balance: $25.000000." in follow


def test_the_grant_form_refuses_an_adjustment_below_zero(admin_client: Client, owner: User) -> None:
    html = page(
        admin_client.post(
            f"/admin/billing/creditaccount/{owner.pk}/grant/", {"amount_usd": "-6", "kind": "adjustment", "note": ""}
        )
    )
    assert "This adjustment would take the balance below zero." in html
    assert LedgerEntry.objects.filter(user=owner).count() == 1


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"amount_usd": "-1", "kind": "grant"}, "Only an adjustment can be negative."),
        ({"amount_usd": "0", "kind": "grant"}, "The amount must not be zero."),
        ({"amount_usd": "1.2345678", "kind": "grant"}, "Enter the amount in US dollars with at most 6 decimals"),
        ({"amount_usd": "ten", "kind": "grant"}, "Enter the amount in US dollars with at most 6 decimals"),
        ({"amount_usd": "1", "kind": "usage"}, "Select a valid choice."),
    ],
)
def test_the_grant_form_validates_its_input(admin_client: Client, owner: User, data: dict, error: str) -> None:
    html = page(admin_client.post(f"/admin/billing/creditaccount/{owner.pk}/grant/", data))
    assert error in html
    assert LedgerEntry.objects.filter(user=owner).count() == 1


def test_the_grant_action_shows_a_form_then_grants_each_selected_account(
    admin_client: Client, owner: User, outsider: User
) -> None:
    selected = {"action": "grant_credits", "_selected_action": [owner.pk, outsider.pk]}
    form = page(admin_client.post("/admin/billing/creditaccount/", selected))
    assert "Grant credits to 2 account(s)" in form
    assert LedgerEntry.objects.filter(user__in=[owner, outsider]).count() == 2  # the sign-up credits only

    response = admin_client.post(
        "/admin/billing/creditaccount/",
        {**selected, "apply": "1", "amount_usd": "2.5", "kind": "grant", "note": "Promo"},
    )

    assert response.status_code == 302
    for user in (owner, outsider):
        assert CreditAccount.objects.get(user=user).balance_micros == 7_500_000
        assert LedgerEntry.objects.filter(user=user, note="Promo", amount_micros=2_500_000).count() == 1
    assert "$2.500000 recorded for 2 accounts." in page(admin_client.get(response["Location"]))


def test_the_grant_action_reports_the_accounts_it_refused(admin_client: Client, owner: User, outsider: User) -> None:
    credits_grant(user=outsider, amount_micros=-2_000_000, kind="adjustment")

    response = admin_client.post(
        "/admin/billing/creditaccount/",
        {"action": "grant_credits", "_selected_action": [owner.pk, outsider.pk], "apply": "1",
         "amount_usd": "-4", "kind": "adjustment", "note": "Correction"},
        follow=True,
    )  # fmt: skip

    html = page(response)
    assert "-$4.000000 recorded for 1 account." in html
    assert "Refused for outsider@example.com: This adjustment would take the balance below zero." in html
    assert CreditAccount.objects.get(user=owner).balance_micros == 1_000_000
    assert CreditAccount.objects.get(user=outsider).balance_micros == 3_000_000


def test_staff_without_the_change_permission_cannot_grant(owner: User, client_for) -> None:
    staff = User.objects.create_user("viewer@example.com", "pw-viewer-123", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_creditaccount"))
    client = client_for(staff)

    assert client.get("/admin/billing/creditaccount/").status_code == 200
    assert client.get(f"/admin/billing/creditaccount/{owner.pk}/grant/").status_code == 403
    assert (
        client.post(
            f"/admin/billing/creditaccount/{owner.pk}/grant/", {"amount_usd": "100", "kind": "grant"}
        ).status_code
        == 403
    )
    assert 'value="grant_credits"' not in page(client.get("/admin/billing/creditaccount/"))
    assert "Grant credits" not in page(client.get(f"/admin/billing/creditaccount/{owner.pk}/change/"))
    assert CreditAccount.objects.get(user=owner).balance_micros == 5_000_000


def test_the_grant_page_of_an_unknown_account_is_a_404(admin_client: Client) -> None:
    assert admin_client.get("/admin/billing/creditaccount/987654/grant/").status_code == 404


def test_anonymous_visitors_are_sent_to_the_admin_login(owner: User) -> None:
    response = Client().get(f"/admin/billing/creditaccount/{owner.pk}/grant/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


# --- Ledger and usage: append-only ------------------------------------------------


@pytest.mark.parametrize("model", ["ledgerentry", "usagerecord", "credithold"])
def test_ledger_usage_and_holds_cannot_be_added_changed_or_deleted_in_admin(
    admin_client: Client, history: History, owner: User, model: str
) -> None:
    credit_reserve(user_id=owner.pk, amount_micros=1, request_id="req_hold")
    obj = {
        "ledgerentry": LedgerEntry.objects.first,
        "usagerecord": UsageRecord.objects.first,
        "credithold": lambda: owner.credit_holds.first(),
    }[model]()

    assert admin_client.get(f"/admin/billing/{model}/add/").status_code == 403
    change = page(admin_client.get(f"/admin/billing/{model}/{obj.pk}/change/"))
    assert 'name="_save"' not in change
    assert admin_client.post(f"/admin/billing/{model}/{obj.pk}/change/", {}).status_code == 403
    assert admin_client.get(f"/admin/billing/{model}/{obj.pk}/delete/").status_code == 403
    assert 'value="delete_selected"' not in page(admin_client.get(f"/admin/billing/{model}/"))


def test_the_ledger_list_filters_by_kind_and_user(admin_client: Client, owner: User, outsider: User) -> None:
    admin_client.post(f"/admin/billing/creditaccount/{owner.pk}/grant/", {"amount_usd": "3", "kind": "refund"})

    refunds = page(admin_client.get("/admin/billing/ledgerentry/?kind__exact=refund"))
    assert "1 ledger entry" in refunds
    assert '<td class="field-amount">$3.000000</td>' in refunds

    for_owner = page(admin_client.get(f"/admin/billing/ledgerentry/?user__id__exact={owner.pk}"))
    assert for_owner.count("field-amount") == 2
    assert "outsider@example.com" not in for_owner


def test_the_usage_list_filters_by_model_status_and_date(admin_client: Client, history: History) -> None:
    embeddings = page(admin_client.get("/admin/billing/usagerecord/?model=dos-ai-embed"))
    assert "5 usage records" in embeddings

    failed = page(admin_client.get("/admin/billing/usagerecord/?status=server"))
    assert "1 usage record" in failed
    assert '<td class="field-status_code">502</td>' in failed

    spike_day = history.day(3)
    on_spike_day = page(
        admin_client.get(
            f"/admin/billing/usagerecord/?created_at__day={spike_day.day}"
            f"&created_at__month={spike_day.month}&created_at__year={spike_day.year}"
        )
    )
    assert "200 usage records" in on_spike_day
    assert '<td class="field-cost">$0.001250</td>' in on_spike_day
