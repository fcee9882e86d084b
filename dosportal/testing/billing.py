"""Settled calls for tests that need usage history: reserved and settled through the real services."""

from __future__ import annotations

import datetime as dt
import itertools

from accounts.models import User
from apikeys.models import ApiKey
from billing.models import ServedModel, UsageRecord
from billing.services import credit_reserve, usage_settle
from billing.settlement import Settlement

_request_ids = itertools.count(1)


def settle_call(
    owner: User,
    api_key: ApiKey,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    model: str = "dos-ai",
    request_id: str = "",
    at: dt.datetime | None = None,
    status: int = 200,
    hold_micros: int = 100_000,
) -> UsageRecord | None:
    """One call of `model` as the gateway settles it: priced by billing from the model's row."""
    served = ServedModel.objects.get(name=model)
    request_id = request_id or f"req_test_{next(_request_ids)}"
    hold_id = credit_reserve(user_id=owner.pk, amount_micros=hold_micros, request_id=request_id)
    assert hold_id is not None, "the test account cannot cover the hold"
    return usage_settle(
        settlement=Settlement(
            hold_id=hold_id,
            user_id=owner.pk,
            api_key_id=api_key.pk,
            request_id=request_id,
            client_request_id="",
            endpoint="embeddings" if served.kind == ServedModel.Kind.EMBEDDING else "chat/completions",
            model=served.name,
            input_price_micros_per_million=served.input_price_micros_per_million,
            output_price_micros_per_million=served.output_price_micros_per_million,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            charge=status == 200,
            status_code=status,
            streamed=False,
            latency_ms=90,
            started_at=at or dt.datetime.now(dt.UTC),
        )
    )
