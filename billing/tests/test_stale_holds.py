from __future__ import annotations

import datetime as dt

from django.core.management import call_command
from django.utils import timezone

from billing.models import CreditAccount, CreditHold, LedgerEntry, UsageRecord
from billing.services import credit_reserve, credit_reserve_for_key
from dosportal.testing.settlements import call_settlement


def test_it_releases_only_holds_older_than_the_cutoff(owner, capsys):
    old = credit_reserve(user_id=owner.pk, amount_micros=300, request_id="req_old")
    fresh = credit_reserve(user_id=owner.pk, amount_micros=200, request_id="req_fresh")
    two_hours_ago = timezone.now() - dt.timedelta(hours=2)
    CreditHold.objects.filter(pk=old).update(created_at=two_hours_ago, heartbeat_at=two_hours_ago)

    call_command("release_stale_holds", "--older-than-minutes", "60")

    assert capsys.readouterr().out == "Released 1 stale hold.\n"
    assert list(CreditHold.objects.values_list("pk", flat=True)) == [fresh]
    account = CreditAccount.objects.get(user=owner)
    assert (account.balance_micros, account.held_micros) == (5_000_000, 200)


def test_with_nothing_stale_it_changes_nothing(owner, capsys):
    credit_reserve(user_id=owner.pk, amount_micros=100, request_id="req_1")

    call_command("release_stale_holds")

    assert capsys.readouterr().out == "Released 0 stale holds.\n"
    assert CreditAccount.objects.get(user=owner).held_micros == 100


def test_a_long_call_whose_heartbeat_is_fresh_keeps_its_hold(owner, capsys):
    """A stream older than the cutoff is still renewed by its worker: its hold is in use."""
    live = credit_reserve(user_id=owner.pk, amount_micros=300, request_id="req_long")
    CreditHold.objects.filter(pk=live).update(created_at=timezone.now() - dt.timedelta(hours=2))

    call_command("release_stale_holds", "--older-than-minutes", "1")

    assert capsys.readouterr().out == "Released 0 stale holds.\n"
    assert list(CreditHold.objects.values_list("pk", flat=True)) == [live]


def test_a_dead_workers_hold_is_charged_for_what_it_had_delivered(owner, make_key, capsys):
    api_key, _ = make_key(owner)
    call = call_settlement(
        hold_id=0,
        user_id=owner.pk,
        api_key_id=api_key.pk,
        request_id="req_dead",
        input_price_micros_per_million=0,
        output_price_micros_per_million=1_000_000,
        prompt_tokens=0,
        completion_tokens=0,
        latency_ms=0,
        started_at=timezone.now(),
    ).hold_record()
    hold_id = credit_reserve_for_key(user_id=owner.pk, amount_micros=5_000, request_id="req_dead", call=call)
    five_minutes_ago = timezone.now() - dt.timedelta(minutes=5)
    CreditHold.objects.filter(pk=hold_id).update(
        heartbeat_at=five_minutes_ago, delivered_prompt_tokens=7, delivered_completion_tokens=1_234
    )

    call_command("release_stale_holds", "--older-than-minutes", "1")

    assert capsys.readouterr().out == "Released 1 stale hold.\n"
    assert not CreditHold.objects.exists()
    record = UsageRecord.objects.get(request_id="req_dead")
    assert (record.prompt_tokens, record.completion_tokens, record.cost_micros, record.status_code) == (
        7,
        1_234,
        1_234,
        500,
    )
    account = CreditAccount.objects.get(user=owner)
    assert (account.balance_micros, account.held_micros) == (5_000_000 - 1_234, 0)
    assert LedgerEntry.objects.filter(user=owner, kind=LedgerEntry.Kind.USAGE).get().amount_micros == -1_234
