"""Reservation and settlement as one SQL statement each, for the /v1 hot path on PostgreSQL.

The same rules as `billing.services.credit_reserve` / `usage_settle` (the ORM forms,
used on SQLite), in one round trip and one commit each: the tests run the same
cases through both (`billing/tests/test_hotpath.py`).

- reserve: a conditional UPDATE of the account's held credit and the INSERT of its
  hold, in one statement; nothing is written when the available credit is short.
  The key's last-used time rides along when it is a minute stale.
- settle: DELETE the hold, lock and UPDATE the account, INSERT the usage record and
  the ledger entry, in one statement. A hold that is already gone makes the whole
  statement a no-op, which is what makes a retried settlement exactly-once.
"""

from __future__ import annotations

from typing import Any

from apikeys.models import ApiKey
from billing.models import CreditAccount, CreditHold, LedgerEntry, UsageRecord
from billing.settlement import Settlement

_ACCOUNT = CreditAccount._meta.db_table
_HOLD = CreditHold._meta.db_table
_USAGE = UsageRecord._meta.db_table
_LEDGER = LedgerEntry._meta.db_table
_KEY = ApiKey._meta.db_table

RESERVE_SQL = f"""
WITH account AS (
    UPDATE {_ACCOUNT} SET held_micros = held_micros + %(amount)s
    WHERE user_id = %(user_id)s AND balance_micros - held_micros >= %(amount)s
    RETURNING user_id
), touched AS (
    UPDATE {_KEY} SET last_used_at = now()
    WHERE id = %(key_id)s AND %(touch)s AND EXISTS (SELECT 1 FROM account)
)
INSERT INTO {_HOLD} (user_id, amount_micros, request_id, created_at)
SELECT user_id, %(amount)s, %(request_id)s, now() FROM account
RETURNING id
"""

SETTLE_SQL = f"""
WITH hold AS (
    DELETE FROM {_HOLD} WHERE id = %(hold_id)s RETURNING user_id, amount_micros
), locked AS (
    SELECT a.user_id, hold.amount_micros AS released,
           GREATEST(0, LEAST(%(cost)s::bigint, a.balance_micros - a.held_micros + hold.amount_micros)) AS charge
    FROM {_ACCOUNT} a JOIN hold ON hold.user_id = a.user_id
    FOR UPDATE OF a
), account AS (
    UPDATE {_ACCOUNT} a
    SET held_micros = a.held_micros - locked.released, balance_micros = a.balance_micros - locked.charge,
        updated_at = now()
    FROM locked WHERE a.user_id = locked.user_id
    RETURNING a.user_id, a.balance_micros, locked.charge
), usage AS (
    INSERT INTO {_USAGE} (request_id, client_request_id, user_id, api_key_id, endpoint, model, prompt_tokens,
                          completion_tokens, cost_micros, status_code, streamed, latency_ms, created_at)
    SELECT %(request_id)s, %(client_request_id)s, account.user_id, %(api_key_id)s, %(endpoint)s, %(model)s,
           %(prompt_tokens)s, %(completion_tokens)s, account.charge, %(status_code)s, %(streamed)s,
           %(latency_ms)s, %(started_at)s
    FROM account
    RETURNING id
), ledger AS (
    INSERT INTO {_LEDGER} (user_id, kind, amount_micros, balance_after_micros, note, usage_id, created_at)
    SELECT account.user_id, '{LedgerEntry.Kind.USAGE.value}', -account.charge, account.balance_micros, %(note)s,
           usage.id, now()
    FROM account, usage WHERE account.charge > 0
)
SELECT charge FROM account
"""


def reserve_params(*, user_id: int, key_id: int, amount_micros: int, request_id: str, touch: bool) -> dict[str, Any]:
    return {"user_id": user_id, "key_id": key_id, "amount": amount_micros, "request_id": request_id, "touch": touch}


def settle_params(settlement: Settlement) -> dict[str, Any]:
    return {
        "hold_id": settlement.hold_id,
        "cost": settlement.cost_micros,
        "request_id": settlement.request_id,
        "client_request_id": settlement.client_request_id,
        "api_key_id": settlement.api_key_id,
        "endpoint": settlement.endpoint,
        "model": settlement.model,
        "prompt_tokens": settlement.prompt_tokens,
        "completion_tokens": settlement.completion_tokens,
        "status_code": settlement.status_code,
        "streamed": settlement.streamed,
        "latency_ms": settlement.latency_ms,
        "started_at": settlement.started_at,
        "note": settlement.note,
    }
