"""One /v1 call from admission to settlement.

Order of checks, each answering in the API's error shape:
method (405) → key (401) → body size (413) → JSON and fields (400) → model (404)
→ rate limits (429) → credit (402) → upstream (502/504, or its own 4xx).

The request path costs three database round trips (key, model, reservation) and
one Redis script; settlement (usage record, ledger entry, last-used time) runs
once the response is complete, in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import timezone

from apikeys.models import ApiKey
from apikeys.services import api_key_authenticate, api_key_mark_used
from billing.models import ServedModel
from billing.selectors import served_models_active
from billing.services import UsageOutcome, credit_reserve, usage_settle
from dosportal.v1 import errors, ratelimit
from dosportal.v1.db import db_step
from dosportal.v1.errors import ApiError
from dosportal.v1.tokens import estimate_text_tokens
from dosportal.v1.upstream import UpstreamStream, UpstreamStreamError, get_upstream
from dosportal.v1.validation import ParsedRequest, read_json_body

logger = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's code for "client closed the connection", used in usage records


def bearer_token(request: HttpRequest) -> str:
    """The key from `Authorization: Bearer …` (scheme case-insensitive, whitespace tolerated)."""
    header = request.headers.get("Authorization", "").strip()
    scheme, _, token = header.replace("\t", " ").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.invalid_api_key(
            "Missing API key. Send it as 'Authorization: Bearer dos_sk_...'." if not header else "Invalid API key"
        )
    return token.strip()


async def authenticate(request: HttpRequest) -> ApiKey:
    api_key = await db_step(api_key_authenticate, bearer_token(request))
    if api_key is None:
        raise errors.invalid_api_key()
    request.api_key = api_key  # type: ignore[attr-defined]
    return api_key


async def rate_limit_state(api_key: ApiKey) -> ratelimit.Decision | None:
    """For a response that ended before admission (bad body, unknown model): headers without a charge."""
    owner = api_key.owner
    return await ratelimit.peek(api_key.pk, rpm=owner.requests_per_minute, tpm=owner.tokens_per_minute)


async def admit(request: HttpRequest, api_key: ApiKey, *, token_cost: int) -> ratelimit.Decision | None:
    owner = api_key.owner
    decision = await ratelimit.admit(
        api_key.pk, rpm=owner.requests_per_minute, tpm=owner.tokens_per_minute, cost=token_cost
    )
    request.rate_limit = decision  # type: ignore[attr-defined]
    if decision is None or decision.admitted:
        return decision
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
    raise ApiError(429, message, "rate_limit_error", "rate_limit_exceeded", headers=headers)


@dataclass
class Call:
    """An admitted call: who, what, and the credit held for it."""

    request_id: str
    endpoint: str
    api_key: ApiKey
    model: ServedModel
    parsed: ParsedRequest
    hold_id: int
    started: float = field(default_factory=time.monotonic)
    started_at: dt.datetime = field(default_factory=timezone.now)

    def _settle_sync(self, status: int, prompt_tokens: int, completion_tokens: int, charge: bool) -> None:
        usage_settle(
            hold_id=self.hold_id,
            outcome=UsageOutcome(
                user_id=self.api_key.owner_id,
                api_key_id=self.api_key.pk,
                request_id=self.request_id,
                endpoint=self.endpoint,
                model=self.model.name,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_micros=self.model.price(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
                if charge
                else 0,
                status_code=status,
                streamed=self.parsed.stream,
                latency_ms=int((time.monotonic() - self.started) * 1000),
                started_at=self.started_at,
            ),
        )
        if charge:
            api_key_mark_used(api_key=self.api_key)

    @contextlib.asynccontextmanager
    async def released_on_failure(self) -> AsyncIterator[None]:
        """Before any answer reaches the client: a failure records the call and releases its hold."""
        try:
            yield
        except ApiError as error:
            await self.settle(error.status, charge=False)
            raise
        except asyncio.CancelledError:
            # The client left before any answer: nothing was delivered, nothing is charged.
            await self.settle(CLIENT_CLOSED, charge=False)
            raise
        except Exception:
            await self.settle(500, charge=False)
            raise

    async def settle(self, status: int, prompt_tokens: int = 0, completion_tokens: int = 0, *, charge: bool) -> None:
        """Charge (or only release the hold) exactly once; survives the caller being cancelled."""
        task = asyncio.ensure_future(db_step(self._settle_sync, status, prompt_tokens, completion_tokens, charge))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise


def _usage_numbers(usage: Any) -> tuple[int, int] | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens", 0) or 0
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return max(0, prompt), max(0, completion)


def _completion_text(payload: dict[str, Any]) -> str:
    texts = []
    for choice in payload.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message") or choice.get("delta") or {}
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            texts.append(message["content"])
        if isinstance(choice.get("text"), str):
            texts.append(choice["text"])
    return "".join(texts)


async def proxy(
    request: HttpRequest, *, endpoint: str, kind: str, parse: Callable[[dict], ParsedRequest]
) -> HttpResponse:
    api_key = await authenticate(request)
    parsed = parse(read_json_body(request))
    model = await db_step(_active_model, parsed.model)
    if model is None:
        raise errors.not_found(f"The model '{parsed.model}' does not exist.", "model_not_found")
    if model.kind != kind:
        raise errors.bad_request(f"The model '{model.name}' does not support /v1/{endpoint}.", "invalid_value")

    decision = await admit(request, api_key, token_cost=parsed.prompt_tokens + parsed.completion_tokens)
    worst_case = model.price(prompt_tokens=parsed.prompt_tokens, completion_tokens=parsed.completion_tokens)
    hold_id = await db_step(
        credit_reserve, user_id=api_key.owner_id, amount_micros=worst_case, request_id=request.request_id
    )
    if hold_id is None:
        await ratelimit.release(api_key.pk, decision)  # a refused request consumes nothing
        request.rate_limit = None  # the response's headers then show the window without this request
        raise errors.insufficient_balance()

    call = Call(request.request_id, endpoint, api_key, model, parsed, hold_id)
    upstream_body = {**parsed.body, "model": model.upstream_name}
    upstream = get_upstream()
    if not parsed.stream:
        return await _complete(call, upstream, upstream_body)
    upstream_body["stream_options"] = {**(parsed.body.get("stream_options") or {}), "include_usage": True}
    async with call.released_on_failure():
        stream = await upstream.open_stream(endpoint, upstream_body)
    response = StreamingHttpResponse(_relay(call, stream), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # tell nginx-style proxies not to buffer the stream
    return response


async def _complete(call: Call, upstream: Any, upstream_body: dict[str, Any]) -> HttpResponse:
    async with call.released_on_failure():
        payload = await upstream.request(call.endpoint, upstream_body)
    counted = _usage_numbers(payload.get("usage"))
    if counted is None:
        counted = (call.parsed.prompt_tokens, estimate_text_tokens(_completion_text(payload)))
    payload["model"] = call.model.name
    await call.settle(200, *counted, charge=True)
    return JsonResponse(payload)


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def _relay(call: Call, stream: UpstreamStream) -> AsyncIterator[bytes]:
    """Forward each event as it arrives; meter what was delivered, whatever ends the stream."""
    usage: tuple[int, int] | None = None
    delivered: list[str] = []
    status, charge, settled = 200, True, False
    try:
        async for data in stream.events():
            try:
                chunk = json.loads(data)
            except ValueError:
                continue  # not an event the API defines: drop it rather than confuse SDK parsers
            if not isinstance(chunk, dict):
                continue
            counted = _usage_numbers(chunk.get("usage"))
            if counted is not None:
                usage = counted
            if "model" in chunk:
                chunk["model"] = call.model.name
            if not call.parsed.client_wants_usage:
                # We asked the upstream for usage; a client that did not gets the stream it asked for.
                chunk.pop("usage", None)
                if not chunk.get("choices"):
                    continue
            delivered.append(_completion_text(chunk))
            yield _sse(chunk)
        # Settle before the final event, so a client that has seen [DONE] sees its charge too.
        await _finish(call, stream, status, usage, delivered, charge)
        settled = True
        yield b"data: [DONE]\n\n"
    except UpstreamStreamError as error:
        status, charge = error.api_error.status, False
        await _finish(call, stream, status, usage, delivered, charge)
        settled = True
        api_error = error.api_error
        yield _sse({"error": {"message": api_error.message, "type": api_error.type, "code": api_error.code}})
    except (asyncio.CancelledError, GeneratorExit):
        status = CLIENT_CLOSED
        raise
    finally:
        if not settled:
            await _finish(call, stream, status, usage, delivered, charge)


async def _finish(
    call: Call, stream: UpstreamStream, status: int, usage: tuple[int, int] | None, delivered: list[str], charge: bool
) -> None:
    try:
        await asyncio.shield(asyncio.ensure_future(stream.aclose()))
    except Exception as error:  # noqa: BLE001 - closing a broken upstream connection may fail
        logger.debug("closing upstream stream: %r", error)
    if usage is None:
        usage = (call.parsed.prompt_tokens, estimate_text_tokens("".join(delivered)))
    await call.settle(status, *usage, charge=charge)


def _active_model(name: str) -> ServedModel | None:
    return ServedModel.objects.filter(name=name, is_active=True).first()


async def list_models() -> list[ServedModel]:
    return await db_step(lambda: list(served_models_active()))


async def get_model(name: str) -> ServedModel | None:
    return await db_step(_active_model, name)
