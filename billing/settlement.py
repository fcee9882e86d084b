"""What a finished /v1 call reports to billing, and what billing decides it costs.

The gateway reports what happened (who, which model at which prices, the token
counts, the status, timings); billing prices it (`Settlement.cost_micros`) and
caps the charge at what the account can pay when the settlement is written.

A `Settlement` is plain data that survives a round trip through JSON, so a
settlement that cannot reach PostgreSQL can be kept on disk and written later
(`billing.spool`) — exactly once, because writing it deletes its hold and a hold
that is gone makes the write a no-op.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from billing.money import cost_micros

# Token counts are stored in 32-bit columns. An upstream that reports more than this for
# one call is broken; its figures are not believed (see `believable_tokens`).
MAX_TOKENS_PER_CALL = 2**31 - 1
# usage_record.status_code is a smallint (0..32767 for PositiveSmallIntegerField).
MAX_STATUS = 599
# A cost column is a bigint; no real call comes near this, a misconfigured price might.
MAX_COST_MICROS = 2**62
# The status recorded for a call whose worker died before settling it (found by its stopped
# heartbeat): the call failed on our side, and is charged for what it had delivered.
WORKER_LOST_STATUS = 500


def believable_tokens(value: Any) -> int | None:
    """A token count the upstream reported, if it is one: an int within the column's range."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if value < 0 or value > MAX_TOKENS_PER_CALL:
        return None
    return value


@dataclass(frozen=True, slots=True)
class Settlement:
    hold_id: int
    user_id: int
    api_key_id: int
    request_id: str  # ours, unique per call
    client_request_id: str  # the client's own id, if it sent a sane one ("" otherwise)
    endpoint: str
    model: str
    input_price_micros_per_million: int
    output_price_micros_per_million: int
    prompt_tokens: int
    completion_tokens: int
    charge: bool  # False for a call that failed: recorded, not charged
    status_code: int
    streamed: bool
    latency_ms: int
    started_at: dt.datetime

    @property
    def cost_micros(self) -> int:
        """What the usage is worth (0 when not charged); the account pays at most its available credit."""
        if not self.charge:
            return 0
        return min(
            MAX_COST_MICROS,
            cost_micros(
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                input_price_per_million=self.input_price_micros_per_million,
                output_price_per_million=self.output_price_micros_per_million,
            ),
        )

    @property
    def note(self) -> str:
        return f"{self.model} {self.endpoint}"[:255]

    def to_json(self) -> dict[str, Any]:
        # Field by field rather than dataclasses.asdict, which deep-copies every value: this runs
        # on every call (the hold's record of it).
        data = {name: getattr(self, name) for name in _FIELDS}
        data["started_at"] = self.started_at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settlement:
        return cls(**{**data, "started_at": dt.datetime.fromisoformat(data["started_at"])})

    def hold_record(self, *, slot_key: str = "", slot_member: str = "") -> dict[str, Any]:
        """What the hold keeps of the call (`CreditHold.call`), so that whoever finds the hold
        after its worker died can settle it (`recovered`) and free its concurrency slot."""
        return {**self.to_json(), "slot_key": slot_key, "slot_member": slot_member}

    @classmethod
    def recovered(
        cls, *, hold_id: int, call: dict[str, Any], prompt_tokens: int, completion_tokens: int, latency_ms: int
    ) -> Settlement:
        """The settlement of a call whose worker died: what it last reported delivering, charged."""
        fields = {name: value for name, value in call.items() if name in cls.__dataclass_fields__}
        return cls.from_json(
            {
                **fields,
                "hold_id": hold_id,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "charge": True,
                "status_code": WORKER_LOST_STATUS,
                "latency_ms": max(0, min(2**31 - 1, latency_ms)),
            }
        )


_FIELDS = tuple(field.name for field in dataclasses.fields(Settlement))
