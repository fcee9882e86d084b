from __future__ import annotations

import datetime as dt

from django.core.management import call_command
from django.utils import timezone

from billing.models import CreditAccount, CreditHold
from billing.services import credit_reserve


def test_it_releases_only_holds_older_than_the_cutoff(owner, capsys):
    old = credit_reserve(user_id=owner.pk, amount_micros=300, request_id="req_old")
    fresh = credit_reserve(user_id=owner.pk, amount_micros=200, request_id="req_fresh")
    CreditHold.objects.filter(pk=old).update(created_at=timezone.now() - dt.timedelta(hours=2))

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
