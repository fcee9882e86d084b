"""Reservation and settlement as one SQL statement each, for the /v1 hot path on PostgreSQL.

The same rules as `billing.services.credit_reserve` / `usage_settle` (the ORM forms,
used on SQLite), in one round trip and one commit each: the tests run the same
cases through both (`billing/tests/test_hotpath.py`).

- reserve: lock the account (and, for a key with a spend limit, then the key), decide
  both limits on the locked rows, then UPDATE the account's held credit (and the key's
  held spend, starting its new period if one began) and INSERT the hold, in one
  statement; nothing is written when either the key's limit or the available credit is
  short. It answers (hold id or NULL, key limit ok, what is left of the key's limit, the
  available credit) so the gateway can say which 402, and why.
  The key's last-used time rides along when it is a minute stale.
  Lock order is account, then key, in both statements: they cannot deadlock.
- settle: DELETE the hold, lock and UPDATE the account (charging the call's cost, never more
  than its hold: the hold is what admission checked against both limits), release the key's held spend
  and add the charge to its period's spend, INSERT the usage record and the ledger
  entry, in one statement. A hold that is already gone makes the whole
  statement a no-op, which is what makes a retried settlement exactly-once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from apikeys.limits import EPOCH
from apikeys.models import ApiKey
from billing.models import CreditAccount, CreditHold, LedgerEntry, UsageRecord
from billing.settlement import Settlement

_ACCOUNT = CreditAccount._meta.db_table
_HOLD = CreditHold._meta.db_table
_USAGE = UsageRecord._meta.db_table
_LEDGER = LedgerEntry._meta.db_table
_KEY = ApiKey._meta.db_table

RESERVE_SQL = f"""
WITH acct AS (
    SELECT user_id, balance_micros - held_micros AS available FROM {_ACCOUNT}
    WHERE user_id = %(user_id)s FOR UPDATE
), limited AS (
    -- Locked after the account (LATERAL: once per account row), the order settlement locks them in.
    SELECT k.spend_limit_micros AS spend_limit,
           CASE WHEN k.spend_period_start >= %(period_start)s THEN k.spend_spent_micros ELSE 0 END
             + k.spend_held_micros AS used,
           k.spend_period_start > %(period_start)s AS stale
    FROM acct CROSS JOIN LATERAL (
        SELECT spend_limit_micros, spend_period_start, spend_spent_micros, spend_held_micros FROM {_KEY}
        WHERE id = %(key_id)s AND %(limited)s AND spend_limit_micros IS NOT NULL FOR UPDATE
    ) k
), verdict AS (
    SELECT acct.user_id,
           NOT EXISTS (SELECT 1 FROM limited WHERE stale OR used + %(amount)s > spend_limit) AS key_ok,
           acct.available >= %(amount)s AS balance_ok,
           EXISTS (SELECT 1 FROM limited) AS counts
    FROM acct
), account AS (
    UPDATE {_ACCOUNT} a SET held_micros = a.held_micros + %(amount)s
    FROM verdict WHERE a.user_id = verdict.user_id AND verdict.key_ok AND verdict.balance_ok
    RETURNING a.user_id, verdict.counts
), key_row AS (
    UPDATE {_KEY} k
    SET last_used_at = CASE WHEN %(touch)s THEN now() ELSE k.last_used_at END,
        spend_spent_micros = CASE WHEN NOT account.counts OR k.spend_period_start >= %(period_start)s
                                  THEN k.spend_spent_micros ELSE 0 END,
        spend_period_start = CASE WHEN account.counts THEN %(period_start)s ELSE k.spend_period_start END,
        spend_held_micros = k.spend_held_micros + CASE WHEN account.counts THEN %(amount)s ELSE 0 END
    FROM account WHERE k.id = %(key_id)s AND (%(touch)s OR account.counts)
), hold AS (
    INSERT INTO {_HOLD} (user_id, amount_micros, request_id, created_at, limited_key_id, call, heartbeat_at,
                         delivered_prompt_tokens, delivered_completion_tokens)
    SELECT user_id, %(amount)s, %(request_id)s, now(), CASE WHEN counts THEN %(key_id)s::bigint END,
           %(call)s::jsonb, now(), 0, 0
    FROM account
    RETURNING id
)
SELECT (SELECT id FROM hold), COALESCE((SELECT key_ok FROM verdict), true),
       (SELECT spend_limit - used FROM limited), (SELECT available FROM acct)
"""

SETTLE_SQL = f"""
WITH hold AS (
    DELETE FROM {_HOLD} WHERE id = %(hold_id)s RETURNING user_id, amount_micros, limited_key_id
), locked AS (
    -- Never more than the hold: admission checked the key's limit and the account's credit
    -- against it, so a charge within it passes neither, whatever the upstream reports.
    SELECT a.user_id, hold.amount_micros AS released, hold.limited_key_id,
           GREATEST(0, LEAST(%(cost)s::bigint, hold.amount_micros,
                             a.balance_micros - a.held_micros + hold.amount_micros)) AS charge
    FROM {_ACCOUNT} a JOIN hold ON hold.user_id = a.user_id
    FOR UPDATE OF a
), account AS (
    UPDATE {_ACCOUNT} a
    SET held_micros = a.held_micros - locked.released, balance_micros = a.balance_micros - locked.charge,
        updated_at = now()
    FROM locked WHERE a.user_id = locked.user_id
    RETURNING a.user_id, a.balance_micros, locked.charge, locked.released, locked.limited_key_id
), key_spend AS (
    -- Locked after the account, as at reservation. The charge counts towards the key's current
    -- period if the call started in it; one that started in a period since over does not.
    UPDATE {_KEY} k
    -- A key with a limit counts every call of its in flight (a limit set while a call ran
    -- counted its hold then: apikeys.services.api_key_update), so each one's hold goes.
    SET spend_held_micros = GREATEST(0, k.spend_held_micros
            - CASE WHEN account.limited_key_id IS NOT NULL OR k.spend_limit_micros IS NOT NULL
                   THEN account.released ELSE 0 END),
        spend_spent_micros = k.spend_spent_micros
            + CASE WHEN k.spend_period_start <= %(started_at)s THEN account.charge ELSE 0 END
    FROM account
    WHERE k.id = %(api_key_id)s AND (account.limited_key_id IS NOT NULL OR k.spend_limit_micros IS NOT NULL)
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


# A worker's live holds, renewed in one statement: (hold ids, delivered prompt and completion tokens).
HEARTBEAT_SQL = f"""
UPDATE {_HOLD} h
SET heartbeat_at = now(), delivered_prompt_tokens = v.prompt, delivered_completion_tokens = v.completion
FROM unnest(%(ids)s::bigint[], %(prompt)s::integer[], %(completion)s::integer[]) AS v(id, prompt, completion)
WHERE h.id = v.id
"""

# Holds whose worker stopped renewing them (the table only holds calls in flight: small).
STALE_HOLDS_SQL = f"""
SELECT id, call, delivered_prompt_tokens, delivered_completion_tokens,
       (EXTRACT(EPOCH FROM COALESCE(heartbeat_at, created_at) - created_at) * 1000)::bigint
FROM {_HOLD} WHERE COALESCE(heartbeat_at, created_at) < now() - make_interval(secs => %(stale_seconds)s)
ORDER BY id LIMIT %(limit)s
"""

HOLD_BY_REQUEST_SQL = f"SELECT id FROM {_HOLD} WHERE request_id = %(request_id)s"


def reserve_params(
    *,
    user_id: int,
    key_id: int,
    amount_micros: int,
    request_id: str,
    touch: bool,
    spend_period_start: dt.datetime | None,
    call: str | None = None,
) -> dict[str, Any]:
    """`spend_period_start`: the start of the key's spend period the call belongs to, or None
    when the key had no spend limit at lookup. `call`: the hold's `call` (JSON text)."""
    return {
        "call": call,
        "user_id": user_id,
        "key_id": key_id,
        "amount": amount_micros,
        "request_id": request_id,
        "touch": touch,
        "limited": spend_period_start is not None,
        "period_start": spend_period_start or EPOCH,
    }


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
