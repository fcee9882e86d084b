"""The one error shape of /v1: {"error": {"message", "type", "code"}} for every status."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from django.http import JsonResponse

if TYPE_CHECKING:
    from dosportal.v1.ratelimit import Decision


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str,
        headers: dict[str, str] | None = None,
        *,
        retryable: bool = False,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.headers = headers or {}
        # An upstream failure another endpoint might not have (unreachable, 5xx, 429, time-out).
        self.retryable = retryable

    def response(self) -> JsonResponse:
        response = error_response(self.status, self.message, self.type, self.code)
        for name, value in self.headers.items():
            response[name] = value
        return response


def error_response(status: int, message: str, type_: str, code: str) -> JsonResponse:
    return JsonResponse({"error": {"message": message, "type": type_, "code": code}}, status=status)


def invalid_api_key(message: str = "Invalid API key") -> ApiError:
    return ApiError(401, message, "authentication_error", "invalid_api_key")


def leaked_api_key(url: str) -> ApiError:
    """A key revoked because it was found published (apikeys.leaks): say where, so its holder
    knows why and what to do."""
    shown = url if len(url) <= 300 else url[:300] + "…"
    return invalid_api_key(f"This key was revoked because it was published at {shown}; create a new key.")


def key_suspended(reason: str) -> ApiError:
    """A key suspended for unusual spend (apikeys.unusual): why, and where it is resumed."""
    from django.conf import settings

    where = f"{settings.DOS_AI_SITE_URL}/keys/" if settings.DOS_AI_SITE_URL else "the API keys page of the dashboard"
    return ApiError(
        403,
        f"This API key is suspended ({reason[:300]}). Its owner can resume it on {where}.",
        "permission_error",
        "key_suspended",
        headers={"x-should-retry": "false"},
    )


def bad_request(message: str, code: str) -> ApiError:
    return ApiError(400, message, "invalid_request_error", code)


def not_found(message: str, code: str = "not_found") -> ApiError:
    return ApiError(404, message, "invalid_request_error", code)


def method_not_allowed(method: str, allowed: list[str]) -> ApiError:
    return ApiError(
        405,
        f"Method {method} is not allowed here; use {' or '.join(allowed)}.",
        "invalid_request_error",
        "method_not_allowed",
        headers={"Allow": ", ".join(allowed)},
    )


def request_too_large(limit: int) -> ApiError:
    return ApiError(
        413, f"Request body is larger than the limit of {limit} bytes.", "invalid_request_error", "request_too_large"
    )


def _usd(micros: int) -> str:
    from billing.money import exact_places, format_usd

    return format_usd(max(0, micros), exact_places(max(0, micros)))


def insufficient_balance(worst_case_micros: int | None = None, available_micros: int | None = None) -> ApiError:
    """Refused because the account's available credit cannot cover the request's worst case."""
    message = "Insufficient credit balance. Add credit to your account to continue."
    if worst_case_micros is not None and available_micros is not None and available_micros > 0:
        message = (
            f"This request may cost up to {_usd(worst_case_micros)}, and {_usd(available_micros)} of credit is "
            "available. Lower max_tokens (or shorten the prompt), or add credit to your account."
        )
    return ApiError(402, message, "billing_error", "insufficient_balance")


def upstream_unavailable(
    message: str = "The inference server is unavailable. Try again shortly.", *, retryable: bool = False
) -> ApiError:
    return ApiError(502, message, "upstream_error", "upstream_unavailable", retryable=retryable)


def upstream_rejected(status: int, message: str = "", code: str = "") -> ApiError:
    """The inference server's own 4xx (context too long, bad parameter…), with its message."""
    return ApiError(
        status,
        message or f"The inference server rejected the request (HTTP {status}).",
        "invalid_request_error",
        code or "upstream_rejected",
    )


def upstream_timeout(*, retryable: bool = False) -> ApiError:
    return ApiError(
        504, "The inference server did not answer in time.", "upstream_error", "upstream_timeout", retryable=retryable
    )


def internal_error() -> ApiError:
    return ApiError(500, "The server had an error processing your request.", "server_error", "internal_error")


def model_not_found(name: str) -> ApiError:
    shown = name if len(name) <= 100 and "\x00" not in name else name.replace("\x00", "")[:100] + "…"
    return ApiError(404, f"The model '{shown}' does not exist.", "invalid_request_error", "model_not_found")


def rate_limited(decision: Decision, token_cost: int) -> ApiError:
    """429 for a refused rate-limit decision: which limit, how much was used, when to retry."""
    wait = decision.retry_after_seconds
    headers = {"Retry-After": str(wait)}
    if decision.refused_by == "requests":
        message = (
            f"Rate limit reached for requests per minute (RPM): limit {decision.limit_requests}, "
            f"used {decision.limit_requests - decision.remaining_requests}, requested 1. Retry after {wait}s."
        )
    elif decision.refused_by == "tokens":
        message = (
            f"Rate limit reached for tokens per minute (TPM): limit {decision.limit_tokens}, "
            f"used {decision.limit_tokens - decision.remaining_tokens}, requested {token_cost}. "
            f"Retry after {wait}s."
        )
    else:
        message = (
            f"Request too large for tokens per minute (TPM): limit {decision.limit_tokens}, "
            f"requested {token_cost}. Send a shorter prompt or a smaller max_tokens."
        )
        headers["x-should-retry"] = "false"  # waiting cannot help: tell the OpenAI SDKs not to retry
    return ApiError(429, message, "rate_limit_error", "rate_limit_exceeded", headers=headers)


def too_many_failed_keys(retry_after: int) -> ApiError:
    return ApiError(
        429,
        f"Too many requests with an invalid API key from this address. Retry after {retry_after}s.",
        "rate_limit_error",
        "rate_limit_exceeded",
        headers={"Retry-After": str(retry_after)},
    )


def service_unavailable() -> ApiError:
    return ApiError(
        503,
        "The service is temporarily unavailable. Try again shortly.",
        "service_unavailable",
        "service_unavailable",
        headers={"Retry-After": "1"},
    )


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def expired_api_key(expired_at: dt.datetime) -> ApiError:
    return ApiError(401, f"This API key expired at {_utc(expired_at)}.", "authentication_error", "expired_api_key")


def ip_not_allowed(client_ip: str) -> ApiError:
    shown = client_ip[:64]
    return ApiError(
        403, f"This API key may not be used from the address {shown}.", "permission_error", "ip_not_allowed"
    )


def model_not_allowed(name: str) -> ApiError:
    return ApiError(403, f"This API key may not use the model '{name}'.", "permission_error", "model_not_allowed")


def concurrency_limit_exceeded(limit: int) -> ApiError:
    noun = "request" if limit == 1 else "requests"
    return ApiError(
        429,
        f"This API key already has {limit} {noun} in flight, its limit. Retry when one finishes.",
        "rate_limit_error",
        "concurrency_limit_exceeded",
        headers={"Retry-After": "1"},
    )


def key_spend_limit_exceeded(
    limit_micros: int,
    period: str,
    resets_at: dt.datetime | None,
    *,
    worst_case_micros: int | None = None,
    left_micros: int | None = None,
) -> ApiError:
    """Refused by the key's own spend limit: reached, or too little of it left for this request's
    worst case (the message then says both, so a developer knows to lower max_tokens)."""
    amount = _usd(limit_micros)
    per = {"day": "daily", "week": "weekly", "month": "monthly"}.get(period, period) if resets_at else "total"
    resets = f"it resets at {_utc(resets_at)}" if resets_at is not None else "it does not reset"
    if worst_case_micros is not None and left_micros is not None and left_micros > 0:
        message = (
            f"This request may cost up to {_usd(worst_case_micros)}; {_usd(left_micros)} of this API key's {per} "
            f"spend limit of {amount} is left ({resets}). Lower max_tokens (or shorten the prompt), "
            "or raise the key's limit."
        )
    elif resets_at is None:
        message = f"This API key has reached its total spend limit of {amount}; it does not reset."
    else:
        message = f"This API key has reached its {per} spend limit of {amount}; {resets}."
    return ApiError(402, message, "billing_error", "key_spend_limit_exceeded", headers={"x-should-retry": "false"})
