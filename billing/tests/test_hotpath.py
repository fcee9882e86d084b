"""The reservation and settlement statements (billing.hotpath, through dosportal.v1.store's
PgStore) and their ORM twins (billing.services, through OrmStore) on the same cases: a key's
spend limit, its period starting again at the UTC boundary, and what a call that started in
one period and settled in the next counts towards.

The clock is the call's start time, passed in as the gateway passes it: no waiting for
midnight.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools

import pytest
from django.db.models import Sum

from apikeys.models import ApiKey
from apikeys.services import api_key_create, api_key_update
from billing.models import CreditAccount, CreditHold, UsageRecord
from billing.services import Refusal, Refused
from billing.settlement import Settlement
from dosportal.testing.settlements import call_settlement
from dosportal.v1.store import Caller, OrmStore, PgStore, conninfo_from_settings

pytestmark = pytest.mark.django_db(transaction=True)

DAY_1_LATE = dt.datetime(2026, 3, 31, 23, 59, 59, 900_000, tzinfo=dt.UTC)
DAY_2_EARLY = dt.datetime(2026, 4, 1, 0, 0, 0, 100_000, tzinfo=dt.UTC)
_ids = itertools.count(1)


class Stores:
    """One store's reserve and settle, run to completion from a synchronous test."""

    def __init__(self, kind: str):
        self.kind = kind

    def run(self, make_coroutine):
        async def go():
            store = PgStore(conninfo_from_settings(), max_size=2, timeout=5) if self.kind == "pg" else OrmStore()
            try:
                return await make_coroutine(store)
            finally:
                if self.kind == "pg":
                    await store.close()

        return asyncio.run(go())

    def reserve(self, caller: Caller, amount: int, started_at: dt.datetime) -> tuple[int | Refusal, str]:
        request_id = f"req_{next(_ids)}"
        result = self.run(
            lambda store: store.reserve(caller, amount_micros=amount, request_id=request_id, started_at=started_at)
        )
        self.last_refused = result if isinstance(result, Refused) else None
        return (result.why if isinstance(result, Refused) else result), request_id

    def settle(self, caller: Caller, hold_id: int, request_id: str, charge: int, started_at: dt.datetime) -> None:
        settlement = _settlement(caller, hold_id, request_id, charge, started_at)
        self.run(lambda store: store.settle(settlement))


def _settlement(
    caller: Caller, hold_id: int, request_id: str, charge: int, started_at: dt.datetime = DAY_1_LATE
) -> Settlement:
    # 1 micro-USD per prompt token makes the charge exact.
    return call_settlement(
        hold_id=hold_id,
        user_id=caller.owner_id,
        api_key_id=caller.key_id,
        request_id=request_id,
        input_price_micros_per_million=1_000_000,
        prompt_tokens=charge,
        latency_ms=1,
        started_at=started_at,
    )


@pytest.fixture(params=["pg", "orm"])
def stores(request) -> Stores:
    return Stores(request.param)


def caller_of(api_key: ApiKey) -> Caller:
    api_key.refresh_from_db()
    return Caller.of(api_key)


@pytest.fixture
def limited(owner) -> ApiKey:
    api_key, _ = api_key_create(owner=owner, name="limited")
    api_key_update(api_key=api_key, spend_limit_micros=100, spend_period="day")
    ApiKey.objects.filter(pk=api_key.pk).update(spend_period_start=None)  # as if never used
    return api_key


def spent_since(api_key: ApiKey, start: dt.datetime) -> int:
    records = UsageRecord.objects.filter(api_key=api_key, created_at__gte=start)
    return records.aggregate(total=Sum("cost_micros"))["total"] or 0


def test_the_limit_is_the_spend_plus_what_is_held(stores, limited):
    caller = caller_of(limited)
    first, first_id = stores.reserve(caller, 60, DAY_1_LATE)
    over, _ = stores.reserve(caller, 41, DAY_1_LATE)
    exact, exact_id = stores.reserve(caller, 40, DAY_1_LATE)

    assert isinstance(first, int) and isinstance(exact, int)
    assert over is Refusal.KEY_SPEND_LIMIT
    limited.refresh_from_db()
    assert (limited.spend_held_micros, limited.spend_spent_micros) == (100, 0)
    stores.settle(caller, first, first_id, 50, DAY_1_LATE)  # charged less than it held
    stores.settle(caller, exact, exact_id, 40, DAY_1_LATE)
    limited.refresh_from_db()
    assert (limited.spend_held_micros, limited.spend_spent_micros) == (0, 90)
    assert stores.reserve(caller, 11, DAY_1_LATE)[0] is Refusal.KEY_SPEND_LIMIT
    assert stores.last_refused.left_micros == 10  # what the 402 says is left of the limit
    assert isinstance(stores.reserve(caller, 10, DAY_1_LATE)[0], int)
    assert CreditAccount.objects.get(user=limited.owner).held_micros == 10


def test_a_charge_never_exceeds_the_hold_whatever_the_upstream_reports(stores, limited):
    """The hold is what admission checked against the key's limit and the account's credit: an
    upstream that reports more than it (an undercounted prompt) cannot take either past its limit."""
    caller = caller_of(limited)
    hold, request_id = stores.reserve(caller, 60, DAY_1_LATE)

    stores.settle(caller, hold, request_id, 5_000, DAY_1_LATE)  # reported: 5,000 µ$ of usage

    limited.refresh_from_db()
    assert (limited.spend_held_micros, limited.spend_spent_micros) == (0, 60)
    assert UsageRecord.objects.get(request_id=request_id).cost_micros == 60
    account = CreditAccount.objects.get(user=limited.owner)
    assert (account.balance_micros, account.held_micros) == (5_000_000 - 60, 0)


def test_the_period_starts_again_at_midnight_utc(stores, limited):
    caller = caller_of(limited)
    hold, request_id = stores.reserve(caller, 100, DAY_1_LATE)
    stores.settle(caller, hold, request_id, 100, DAY_1_LATE)

    refused, _ = stores.reserve(caller, 1, DAY_1_LATE)
    admitted, _ = stores.reserve(caller, 100, DAY_2_EARLY)

    assert refused is Refusal.KEY_SPEND_LIMIT
    assert isinstance(admitted, int)
    limited.refresh_from_db()
    assert limited.spend_period_start == dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    assert (limited.spend_spent_micros, limited.spend_held_micros) == (0, 100)


def test_a_call_that_started_before_midnight_counts_in_the_day_it_started(stores, limited):
    caller = caller_of(limited)
    late, late_id = stores.reserve(caller, 30, DAY_1_LATE)
    early, early_id = stores.reserve(caller, 60, DAY_2_EARLY)  # the late call's hold still counts: 30 + 60
    refused, _ = stores.reserve(caller, 11, DAY_2_EARLY)
    stores.settle(caller, late, late_id, 30, DAY_1_LATE)
    stores.settle(caller, early, early_id, 60, DAY_2_EARLY)

    assert refused is Refusal.KEY_SPEND_LIMIT
    limited.refresh_from_db()
    day_2 = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    assert (limited.spend_spent_micros, limited.spend_held_micros) == (60, 0)
    assert limited.spend_spent_micros == spent_since(limited, day_2)
    # A call still carrying yesterday's period once today's has begun is refused, not
    # counted in a day whose spend has been closed.
    assert stores.reserve(caller, 1, DAY_1_LATE)[0] is Refusal.KEY_SPEND_LIMIT


def test_the_balance_is_checked_after_the_key_limit_and_neither_writes_when_refused(stores, limited):
    CreditAccount.objects.filter(user=limited.owner).update(balance_micros=50)
    caller = caller_of(limited)

    short, _ = stores.reserve(caller, 60, DAY_1_LATE)
    over_limit, _ = stores.reserve(caller, 101, DAY_1_LATE)

    assert (short, over_limit) == (Refusal.BALANCE, Refusal.KEY_SPEND_LIMIT)
    limited.refresh_from_db()
    assert (limited.spend_held_micros, limited.spend_spent_micros) == (0, 0)
    assert CreditHold.objects.count() == 0
    assert CreditAccount.objects.get(user=limited.owner).held_micros == 0


def test_a_key_without_a_limit_holds_nothing_on_the_key(stores, owner):
    api_key, _ = api_key_create(owner=owner, name="free")
    caller = caller_of(api_key)
    hold, request_id = stores.reserve(caller, 10_000, DAY_1_LATE)
    stores.settle(caller, hold, request_id, 5_000, DAY_1_LATE)

    api_key.refresh_from_db()
    assert (api_key.spend_held_micros, api_key.spend_spent_micros, api_key.spend_period_start) == (0, 0, None)
    assert CreditHold.objects.count() == 0


def test_setting_a_limit_counts_what_the_key_already_spent_this_period(stores, owner):
    api_key, _ = api_key_create(owner=owner, name="later limited")
    caller = caller_of(api_key)
    now = dt.datetime.now(dt.UTC)
    hold, request_id = stores.reserve(caller, 70, now)
    stores.settle(caller, hold, request_id, 70, now)

    api_key_update(api_key=api_key, spend_limit_micros=100, spend_period="month")
    caller = caller_of(api_key)

    assert api_key.spend_spent_micros == 70
    assert stores.reserve(caller, 31, now)[0] is Refusal.KEY_SPEND_LIMIT
    assert isinstance(stores.reserve(caller, 30, now)[0], int)


async def _reserve_all(store: PgStore, callers: list[Caller], per_caller: int) -> list[tuple[Caller, int, str]]:
    held = []
    for caller in callers:
        for _ in range(per_caller):
            request_id = f"req_{next(_ids)}"
            hold = await store.reserve(caller, amount_micros=100, request_id=request_id, started_at=DAY_1_LATE)
            held.append((caller, hold, request_id))
    return held


def test_concurrent_settlements_of_two_accounts_are_written_together_each_charged_once(owner, outsider):
    """Settlements that arrive while one batch is written go in the next, one transaction each,
    accounts locked in ascending order; every charge lands exactly once."""
    callers = [caller_of(api_key_create(owner=user, name="batch")[0]) for user in (outsider, owner)]
    balances = {user.pk: CreditAccount.objects.get(user=user).balance_micros for user in (owner, outsider)}
    batch_sizes: list[int] = []

    async def go(store: PgStore) -> None:
        held = await _reserve_all(store, callers, per_caller=20)
        write = store.batches.write

        async def counted(batch: list[Settlement]) -> None:
            batch_sizes.append(len(batch))
            assert [s.user_id for s in batch] == sorted(s.user_id for s in batch)  # the lock order
            await write(batch)

        store.batches.write = counted
        settlements = [_settlement(caller, hold, request_id, 7) for caller, hold, request_id in held]
        await asyncio.gather(*(store.settle(s) for s in settlements))
        await asyncio.gather(*(store.settle(s) for s in settlements))  # replayed: a no-op each

    Stores("pg").run(go)

    assert sum(batch_sizes) == 80 and max(batch_sizes) > 1  # the first alone, the rest behind it
    assert CreditHold.objects.count() == 0
    for user in (owner, outsider):
        account = CreditAccount.objects.get(user=user)
        assert (account.held_micros, account.balance_micros) == (0, balances[user.pk] - 20 * 7)
        assert UsageRecord.objects.filter(user=user).count() == 20


def test_a_settlement_the_database_refuses_does_not_take_its_batch_down(owner):
    """Two settlements with the same request id: the batch is refused, then written one by one —
    the good ones land, only the refused one's caller sees the error."""
    import psycopg

    caller = caller_of(api_key_create(owner=owner, name="batch")[0])
    balance = CreditAccount.objects.get(user=owner).balance_micros
    outcomes: list[object] = []

    async def go(store: PgStore) -> None:
        held = await _reserve_all(store, [caller], per_caller=4)
        settlements = [_settlement(caller, hold, request_id, 5) for _, hold, request_id in held]
        settlements[2] = _settlement(caller, held[2][1], held[1][2], 5)  # a duplicate request id
        outcomes.extend(await asyncio.gather(*(store.settle(s) for s in settlements), return_exceptions=True))

    Stores("pg").run(go)

    assert [type(outcome) for outcome in outcomes].count(psycopg.errors.UniqueViolation) == 1
    assert outcomes.count(None) == 3
    assert UsageRecord.objects.filter(user=owner).count() == 3
    account = CreditAccount.objects.get(user=owner)
    assert (account.balance_micros, account.held_micros) == (balance - 15, 100)  # the refused one's hold stays
