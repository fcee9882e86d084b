"""One /v1 call from admission to settlement.

Order of checks, each answering in the API's error shape:
method (405) → key (401 invalid_api_key — 429 from an address blocked after failed keys — or
expired_api_key) → the key's allowed client addresses (403 ip_not_allowed) → body size (413)
→ JSON and fields (400) → model (404, or 400 for the wrong kind; then 403 model_not_allowed)
→ the key's cap on requests in flight (429 concurrency_limit_exceeded) and rate limits (429),
one Redis script → the key's spend limit (402 key_spend_limit_exceeded) and the account's
credit (402 insufficient_balance), one reservation statement → upstream (502/504, or its own
4xx). A database that cannot be reached is 503.

What one metered call costs (PostgreSQL; see dosportal.v1.store), before the answer starts:
  PostgreSQL  1 round trip  lookup: key + owner's limits + served model, one SELECT
  Redis       1 round trip  the sliding window, one EVAL
  PostgreSQL  1 round trip  reservation (+ last-used time), one statement, one commit
then the upstream call, and after it one settlement statement (one commit; under load the
settlements that wait behind one write share the next commit) — for a stream, before its
final [DONE] — and beside it, in parallel, one Redis EVAL that leaves the window entry at
the tokens used and frees a capped key's slot (ratelimit.finish). No thread hop on
PostgreSQL; no middleware (dosportal.asgi routes /v1 past it). A listing (/v1/models)
costs the lookup, the window, and at most one last-used write a minute. Refused calls
write nothing: a 401/400/404/429 stops before any write, a 402 gives its rate-limit entry
and concurrency slot back. A key with a concurrency cap costs one Redis round trip every
third of DOS_AI_CONCURRENCY_LEASE_SECONDS while it runs (the lease's renewal). Each worker
renews all its calls' holds in one statement every DOS_AI_HOLD_HEARTBEAT_SECONDS
(dosportal.v1.holds), on no call's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from apikeys.keys import hash_key, is_well_formed
from apikeys.limits import ip_allowed, model_allowed, period_end
from apikeys.refusals import why_refused
from billing.services import Refusal, Refused
from billing.settlement import MAX_COST_MICROS, Settlement, believable_tokens
from dosportal import metrics
from dosportal.clientip import client_ip
from dosportal.logfilters import log_api_call
from dosportal.v1 import errors, keyscan, ratelimit, responses
from dosportal.v1.errors import ApiError
from dosportal.v1.holds import get_keeper
from dosportal.v1.pool import upstream_for
from dosportal.v1.settler import get_settler
from dosportal.v1.store import Caller, ModelRow, StoreUnavailable, get_store
from dosportal.v1.tokens import estimate_text_tokens
from dosportal.v1.upstream import UpstreamStream, UpstreamStreamError
from dosportal.v1.validation import ParsedRequest, lookup_name, read_json_body

logger = logging.getLogger(__name__)

T = TypeVar("T")

CLIENT_CLOSED = 499  # nginx's code for "client closed the connection", used in usage records
CLIENT_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,100}$")


@dataclass(slots=True)
class ApiCall:
    """One /v1 request, built once by the endpoint decorator and carried through the path."""

    request: HttpRequest
    request_id: str  # ours: unique per call, whatever the client sends
    client_request_id: str  # the client's own x-request-id / x-client-request-id, when sane
    client_ip: str
    caller: Caller | None = None  # set once the key is known
    metered: bool = False  # credit was held: settlement reports the call (metrics, log line)
    limits: ratelimit.Decision | None = None  # the window as this call left it
    key_in_prompt: bool = False  # the body holds one of our keys (dosportal.v1.keyscan)
    started: float = field(default_factory=time.monotonic)
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @classmethod
    def begin(cls, request: HttpRequest) -> ApiCall:
        given = request.headers.get("x-client-request-id") or request.headers.get("x-request-id") or ""
        return cls(
            request=request,
            request_id=f"req_{uuid.uuid4().hex}",
            client_request_id=given if CLIENT_REQUEST_ID_RE.fullmatch(given) else "",
            client_ip=client_ip(request),
        )


def bearer_token(request: HttpRequest) -> str:
    """The key from `Authorization: Bearer …` (scheme case-insensitive, whitespace tolerated)."""
    header = request.headers.get("Authorization", "").strip()
    scheme, _, token = header.replace("\t", " ").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.invalid_api_key(
            "Missing API key. Send it as 'Authorization: Bearer dos_sk_...'." if not header else "Invalid API key"
        )
    return token.strip()


async def _refuse_key(call: ApiCall, error: ApiError) -> ApiError:
    """A 401, counted against the client address; past its limit the address gets 429.
    An address already blocked is refused without counting again (no round trip)."""
    wait = ratelimit.auth_failures.retry_after(call.client_ip)
    if wait is None:
        wait = await ratelimit.auth_failures.failed(call.client_ip)
    return errors.too_many_failed_keys(wait) if wait is not None else error


async def authenticate(
    call: ApiCall, *, model: str | None = None, catalogue: bool = False
) -> tuple[Caller, ModelRow | None, list[ModelRow]]:
    """The caller, with the requested model (and the catalogue) from the same round trip.
    A key that is found is served even from an address blocked after failed keys: the block
    only answers the requests whose key is not known good (ratelimit.AuthFailureGuard)."""
    try:
        raw_key = bearer_token(call.request)
    except ApiError as error:
        raise await _refuse_key(call, error) from None
    if not is_well_formed(raw_key):  # a wrong checksum costs no query
        raise await _refuse_key(call, errors.invalid_api_key())
    hashed_key = hash_key(raw_key)
    found = await get_store().lookup(hashed_key, model=model, catalogue=catalogue)
    caller = found.caller
    if caller is None:
        refused = await why_refused(hashed_key)  # a second query, on the 401 path only
        if refused is not None and refused.suspended:  # a genuine key: not counted against the address
            raise errors.key_suspended(refused.suspended_reason)
        leaked_url = refused.leaked_url if refused is not None else ""
        raise await _refuse_key(call, errors.leaked_api_key(leaked_url) if leaked_url else errors.invalid_api_key())
    # A genuine key past its expiry is not a guess: it does not count against the address.
    if caller.expires_at is not None and caller.expires_at <= dt.datetime.now(dt.UTC):
        raise errors.expired_api_key(caller.expires_at)
    if not ip_allowed(call.client_ip, caller.allowed_ips):
        raise errors.ip_not_allowed(call.client_ip)
    call.caller = caller
    catalogue_rows = [row for row in found.catalogue if model_allowed(row.name, caller.allowed_models)]
    return caller, found.model, catalogue_rows


def check_model_allowed(caller: Caller, model: ModelRow) -> None:
    if not model_allowed(model.name, caller.allowed_models):
        raise errors.model_not_allowed(model.name)


async def _to_the_end(work: Awaitable[T], *, undo: Callable[[T], Awaitable[None]]) -> T:
    """`work`'s result. If the caller is cancelled meanwhile, `work` still runs to its end (a
    script or a statement sent is not abandoned half-way), `undo` takes back what it did, and
    the cancellation goes on."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await undo(await task)
        raise


async def admit(
    call: ApiCall, caller: Caller, *, token_cost: int, in_flight: bool = False
) -> ratelimit.Decision | None:
    """The rate-limit decision for this call (with `in_flight`, also a slot under the key's cap
    on requests in flight, in the same round trip); a refusal raises the documented 429."""
    decision = await _to_the_end(
        ratelimit.admit(
            caller.key_id,
            rpm=caller.requests_per_minute,
            tpm=caller.tokens_per_minute,
            cost=token_cost,
            max_concurrency=(caller.max_concurrency or 0) if in_flight else 0,
        ),
        # The client left while the window was being decided: what the script admitted (a
        # window entry, a concurrency slot) is given back.
        undo=lambda admitted: ratelimit.release(caller.key_id, admitted),
    )
    call.limits = decision
    if decision is not None and not decision.admitted:
        if decision.refused_by == "concurrency":
            raise errors.concurrency_limit_exceeded(decision.limit_concurrency)
        raise errors.rate_limited(decision, token_cost)
    return decision


async def rate_limit_headers(call: ApiCall) -> dict[str, str]:
    """The window's headers for the response; a response that ended before admission peeks."""
    if call.limits is None and call.caller is not None:
        caller = call.caller
        call.limits = await ratelimit.peek(caller.key_id, rpm=caller.requests_per_minute, tpm=caller.tokens_per_minute)
    return call.limits.headers() if call.limits is not None else {}


def report_unmetered(call: ApiCall, endpoint: str, status: int, code: str) -> None:
    """Metrics and the log line of a call that held no credit: a listing, or a refusal."""
    latency = time.monotonic() - call.started
    if status >= 400:
        metrics.refused(reason=code or "error", status=status)
    else:
        metrics.call_finished(endpoint=endpoint, model="", status=status, latency_s=latency)
    log_api_call(
        logger,
        request_id=call.request_id,
        client_request_id=call.client_request_id or None,
        key_hint=call.caller.key_hint if call.caller else None,
        user_id=call.caller.owner_id if call.caller else None,
        endpoint=endpoint or None,
        method=call.request.method,
        path=call.request.path[:200] if not endpoint else None,
        status=status,
        code=code or None,
        latency_ms=int(latency * 1000),
        key_in_prompt=call.key_in_prompt or None,
    )


async def list_models(call: ApiCall) -> list[ModelRow]:
    caller, _, catalogue = await authenticate(call, catalogue=True)
    await admit(call, caller, token_cost=0)
    await get_store().touch(caller)
    return catalogue


async def get_model(call: ApiCall, name: str) -> ModelRow:
    caller, model, _ = await authenticate(call, model=lookup_name(name))
    if model is None:  # refused before admission: a 404 (or 403) takes no rate-limit slot
        raise errors.model_not_found(name)
    check_model_allowed(caller, model)
    await admit(call, caller, token_cost=0)
    await get_store().touch(caller)
    return model


@dataclass
class Metered:
    """An admitted call: who, what, and the credit held for it.

    From the moment its hold is written until it is settled, a call is in exactly one of
    these hands, each of which settles it however it ends (an answer, an error, a cancellation):
    `proxy`'s `released_on_failure` block, the stream relay (`_metered`), or — for a stream
    whose response was never started — `abandon`. The worker's `HoldKeeper` renews the hold
    meanwhile with what the call has delivered, and a worker that dies leaves it to be settled
    for that (dosportal.v1.holds)."""

    call: ApiCall
    endpoint: str
    caller: Caller
    model: ModelRow
    parsed: ParsedRequest
    held_micros: int  # the call's worst case: what admission checked and the hold holds
    hold_id: int = 0
    limits: ratelimit.Decision | None = None  # holds the call's slot under the key's concurrency cap
    slot_keeper: asyncio.Task | None = None
    error_code: str = ""  # the code of the error the client saw, if any
    first_byte: float | None = None  # monotonic time the first streamed bytes were handed on
    meter: _Meter | None = None  # what a stream has delivered so far
    settled: bool = False

    def settlement(self, status: int, prompt_tokens: int, completion_tokens: int, *, charge: bool) -> Settlement:
        return Settlement(
            hold_id=self.hold_id,
            user_id=self.caller.owner_id,
            api_key_id=self.caller.key_id,
            request_id=self.call.request_id,
            client_request_id=self.call.client_request_id,
            endpoint=self.endpoint,
            model=self.model.name,
            input_price_micros_per_million=self.model.input_price_micros_per_million,
            output_price_micros_per_million=self.model.output_price_micros_per_million,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            charge=charge,
            status_code=status,
            streamed=self.parsed.stream,
            latency_ms=min(2**31 - 1, int((time.monotonic() - self.call.started) * 1000)),
            started_at=self.call.started_at,
        )

    def hold_record(self) -> dict[str, Any]:
        slot_key, slot_member = ratelimit.slot_location(self.caller.key_id, self.limits)
        return self.settlement(0, 0, 0, charge=True).hold_record(slot_key=slot_key, slot_member=slot_member)

    def progress(self) -> tuple[int, int]:
        """(prompt, completion) tokens delivered so far, as the hold's heartbeat reports them: a
        stream's usage if the upstream sent it, else the prompt's estimate and the delivered
        text's once anything reached the client; nothing for an answer not yet sent."""
        meter = self.meter
        if meter is None:
            return 0, 0
        if meter.usage is not None:
            return meter.usage
        if not meter.delivered:
            return 0, 0
        return self.parsed.prompt_estimate, meter.delivered.tokens()

    async def settle(self, status: int, prompt_tokens: int = 0, completion_tokens: int = 0, *, charge: bool) -> None:
        """Charge (or only release the hold) exactly once; survives the caller being cancelled
        and the database being away (dosportal.v1.settler). Then the call's metrics and log line."""
        if self.settled:
            return
        self.settled = True
        get_keeper().forget(self.hold_id)
        settlement = self.settlement(status, prompt_tokens, completion_tokens, charge=charge)
        # The settlement's commit and the window's correction go out together: the second round
        # trip adds no wait (see finish_window).
        both = asyncio.gather(get_settler().settle(settlement), self.finish_window(settlement))
        try:
            await asyncio.shield(both)
        except asyncio.CancelledError:
            await both
            raise
        finally:
            self.report(settlement)

    async def abandon(self, stream: UpstreamStream | None = None) -> None:
        """A stream response that was never started (the client left before its first byte was
        sent): nothing was delivered, nothing is charged. A no-op once the call is settled."""
        if self.settled:
            return
        if stream is not None:
            await _close_quietly(stream)
        self.error_code = "client_closed"
        await self.settle(CLIENT_CLOSED, charge=False)

    def report(self, settlement: Settlement) -> None:
        ttft = self.first_byte - self.call.started if self.first_byte is not None else None
        charged = min(settlement.cost_micros, self.held_micros)
        if settlement.cost_micros > charged:
            metrics.written_off(settlement.cost_micros - charged)
            logger.warning(
                "%s: the upstream reported %d + %d tokens, more than the hold of %d µUSD covers; "
                "%d µUSD written off (raise DOS_AI_IMAGE_PART_TOKENS if it had images)",
                self.call.request_id,
                settlement.prompt_tokens,
                settlement.completion_tokens,
                self.held_micros,
                settlement.cost_micros - charged,
            )
        metrics.call_finished(
            endpoint=self.endpoint,
            model=self.model.name,
            status=settlement.status_code,
            code=self.error_code,
            latency_s=settlement.latency_ms / 1000,
            ttft_s=ttft,
            prompt_tokens=settlement.prompt_tokens,
            completion_tokens=settlement.completion_tokens,
            charged_micros=charged,
        )
        log_api_call(
            logger,
            request_id=self.call.request_id,
            client_request_id=self.call.client_request_id or None,
            key_hint=self.caller.key_hint,
            user_id=self.caller.owner_id,
            endpoint=self.endpoint,
            model=self.model.name,
            status=settlement.status_code,
            code=self.error_code or None,
            latency_ms=settlement.latency_ms,
            prompt_tokens=settlement.prompt_tokens,
            completion_tokens=settlement.completion_tokens,
            charged_micros=charged,
            stream=self.parsed.stream,
            ttft_ms=int(ttft * 1000) if ttft is not None else None,
            key_in_prompt=self.call.key_in_prompt or None,
        )

    async def finish_window(self, settlement: Settlement) -> None:
        """The call is over: its slot under the key's concurrency cap is free again, and its
        rate-limit entry keeps the tokens it used instead of the worst case it was admitted at
        (nothing, if it was not charged) — one Redis round trip, run beside the settlement's
        commit, so the answer waits for neither longer than for the commit, and the window the
        client sees next already shows what the call used."""
        if self.slot_keeper is not None:
            self.slot_keeper.cancel()
            self.slot_keeper = None
        limits, self.limits = self.limits, None
        if limits is None or not limits.entry:
            return
        used = settlement.prompt_tokens + settlement.completion_tokens if settlement.charge else 0
        if limits.slot or used < self.parsed.token_cost:
            await ratelimit.finish(self.caller.key_id, limits, used)

    def public_error(self, error: ApiError) -> ApiError:
        """An upstream's error as the client may see it: the upstream's model name replaced."""
        upstream_name, public_name = self.model.upstream_name, self.model.name
        if upstream_name != public_name and upstream_name in error.message:
            error.message = error.message.replace(upstream_name, public_name)
        return error

    @contextlib.asynccontextmanager
    async def released_on_failure(self) -> AsyncIterator[None]:
        """Before any answer reaches the client: a failure records the call and releases its hold."""
        try:
            yield
        except ApiError as error:
            self.error_code = error.code
            await self.settle(error.status, charge=False)
            raise self.public_error(error) from None
        except asyncio.CancelledError:
            # The client left before any answer: nothing was delivered, nothing is charged.
            self.error_code = "client_closed"
            await self.settle(CLIENT_CLOSED, charge=False)
            raise
        except Exception:
            self.error_code = "internal_error"
            await self.settle(500, charge=False)
            raise


def _usage_numbers(
    usage: Any, input_field: str = "prompt_tokens", output_field: str = "completion_tokens"
) -> tuple[int, int] | None:
    """The upstream's token counts, when it reported believable ones."""
    if not isinstance(usage, dict):
        return None
    prompt = believable_tokens(usage.get(input_field))
    completion = believable_tokens(usage.get(output_field, 0) or 0)
    if prompt is None or completion is None:
        if input_field in usage:
            logger.warning("upstream reported unbelievable usage, estimating instead: %.200r", usage)
        return None
    return prompt, completion


# What a choice's message (or a stream's delta) generated besides `content`: every one of them
# was produced by the upstream and relayed, so each counts as delivered. Logprobs are not
# counted: they describe the tokens of `content`, which are counted already.
_GENERATED_TEXT_FIELDS = ("content", "refusal", "reasoning_content", "reasoning")


def _message_texts(message: dict[str, Any], texts: list[str]) -> None:
    for field_name in _GENERATED_TEXT_FIELDS:
        value = message.get(field_name)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):  # content as parts
            texts.extend(part["text"] for part in value if isinstance(part, dict) and isinstance(part.get("text"), str))
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            texts.extend(function[name] for name in ("name", "arguments") if isinstance(function.get(name), str))
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        texts.extend(legacy[name] for name in ("name", "arguments") if isinstance(legacy.get(name), str))


def _completion_text(payload: Any) -> str:
    """Everything a chat or text completion (or one streamed chunk of one) generated."""
    texts: list[str] = []
    choices = payload.get("choices") if isinstance(payload, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        for holder in ("message", "delta"):
            if isinstance(choice.get(holder), dict):
                _message_texts(choice[holder], texts)
        if isinstance(choice.get("text"), str):
            texts.append(choice["text"])
    return "".join(texts)


def _finished(chunk: dict[str, Any]) -> bool:
    choices = chunk.get("choices")
    return isinstance(choices, list) and any(
        isinstance(choice, dict) and choice.get("finish_reason") for choice in choices
    )


def _malformed() -> ApiError:
    return errors.upstream_unavailable("The inference server's answer was malformed.")


def _answer_usage(metered: Metered, payload: Any) -> tuple[int, int]:
    """What a (non-streamed) answer costs: the upstream's usage, else the estimate of what it
    delivered. An answer that is not the endpoint's shape is the upstream's failure: 502."""
    if not isinstance(payload, dict):
        raise _malformed()
    if metered.parsed.api == "responses":
        if not isinstance(payload.get("output", []), list):
            raise _malformed()
        counted = _usage_numbers(responses.usage_fields(payload), "input_tokens", "output_tokens")
        text = responses.output_text(payload)
    elif metered.endpoint == "embeddings":
        if not isinstance(payload.get("data"), list):
            raise _malformed()
        counted = _usage_numbers(payload.get("usage"))
        text = ""
    else:
        choices = payload.get("choices")
        if not isinstance(choices, list) or not all(isinstance(choice, dict) for choice in choices):
            raise _malformed()
        counted = _usage_numbers(payload.get("usage"))
        text = _completion_text(payload)
    return counted or (metered.parsed.prompt_estimate, estimate_text_tokens(text))


async def _reserve(metered: Metered) -> int | Refused:
    """Write the call's hold. The statement is not abandoned half-way: if the client leaves
    meanwhile it finishes, and what it held is released. A lost acknowledgement (the connection
    broke after the statement was sent) may have left a hold: it is looked for and released,
    and if the database cannot say, the hold is never renewed and the next pass over stale
    holds settles it for nothing (dosportal.v1.holds)."""
    call = metered.call

    async def release(reserved: int | Refused) -> None:
        if isinstance(reserved, int):
            metered.hold_id = reserved
            await metered.abandon()

    try:
        return await _to_the_end(
            get_store().reserve(
                metered.caller,
                amount_micros=metered.held_micros,
                request_id=call.request_id,
                started_at=call.started_at,
                call=metered.hold_record(),
            ),
            undo=release,
        )
    except StoreUnavailable as error:
        if error.maybe_ran:
            _background(_release_lost(metered))
        raise


async def _release_lost(metered: Metered) -> None:
    with contextlib.suppress(Exception):
        hold_id = await get_store().hold_for(metered.call.request_id)
        if hold_id is not None:
            metered.hold_id = hold_id
            metered.error_code = "service_unavailable"
            await metered.settle(503, charge=False)


_background_tasks: set[asyncio.Task] = set()


def _background(coroutine: Any) -> None:
    task = asyncio.ensure_future(coroutine)
    _background_tasks.add(task)  # held: the loop keeps only weak references
    task.add_done_callback(_background_tasks.discard)


def _refused(metered: Metered, refused: Refused) -> ApiError:
    caller, worst_case = metered.caller, metered.held_micros
    if refused.why is Refusal.KEY_SPEND_LIMIT:
        return errors.key_spend_limit_exceeded(
            caller.spend_limit_micros or 0,
            caller.spend_period,
            period_end(caller.spend_period, metered.call.started_at),
            worst_case_micros=worst_case,
            left_micros=refused.left_micros,
        )
    return errors.insufficient_balance(worst_case, refused.left_micros)


async def proxy(call: ApiCall, *, endpoint: str, kind: str, parse: Callable[..., ParsedRequest]) -> HttpResponse:
    # The body is read and checked first, but its errors are answered after the key's:
    # a request without a valid key learns nothing about its body.
    parsed: ParsedRequest | None = None
    body_error: ApiError | None = None
    try:
        parsed = parse(read_json_body(call.request), call.request.body)
    except ApiError as error:
        body_error = error
    caller, model, _ = await authenticate(call, model=lookup_name(parsed.model) if parsed else None)
    if body_error is not None or parsed is None:
        raise body_error or errors.internal_error()
    call.key_in_prompt = keyscan.scan(call.request.body, caller, call.client_ip)  # no I/O; notices queued
    if model is None:
        raise errors.model_not_found(parsed.model)
    if model.kind != kind:
        raise errors.bad_request(f"The model '{model.name}' does not support /v1/{endpoint}.", "invalid_value")
    check_model_allowed(caller, model)

    # Admission counts the worst case (the prompt's upper bound and the whole completion
    # budget), and the hold is that worst case's price: the charge never exceeds it.
    decision = await admit(call, caller, token_cost=parsed.token_cost, in_flight=True)
    worst_case = min(
        MAX_COST_MICROS, model.price(prompt_tokens=parsed.prompt_bound, completion_tokens=parsed.completion_tokens)
    )
    metered = Metered(call, endpoint, caller, model, parsed, held_micros=worst_case, limits=decision)
    reserved = await _reserve(metered)
    if isinstance(reserved, Refused):
        await ratelimit.release(caller.key_id, decision)  # a refused request consumes nothing
        call.limits = None  # the response's headers then show the window without this request
        raise _refused(metered, reserved)

    # From here until the call is settled, every way out settles it.
    metered.hold_id = reserved
    get_keeper().track(reserved, metered)
    metered.slot_keeper = ratelimit.keep_slot(caller.key_id, decision, metered)
    call.metered = True
    upstream_body = {**parsed.body, "model": model.upstream_name}
    if parsed.stream and parsed.api != "responses":
        upstream_body["stream_options"] = {**(parsed.body.get("stream_options") or {}), "include_usage": True}
    async with metered.released_on_failure():
        upstream = await upstream_for(model.id, caller.owner_id)
        if not parsed.stream:
            payload = await upstream.request(endpoint, upstream_body)
            counted = _answer_usage(metered, payload)
        else:
            stream = await upstream.open_stream(endpoint, upstream_body)
    if not parsed.stream:
        payload["model"] = model.name
        await metered.settle(200, *counted, charge=True)
        return JsonResponse(payload)
    relay = _relay_responses if parsed.api == "responses" else _relay
    response = EventStream(relay(metered, stream), abandon=lambda: metered.abandon(stream))
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # tell nginx-style proxies not to buffer the stream
    return response


class EventStream(StreamingHttpResponse):
    """A server-sent event stream whose parts are already bytes, in the order to send them.

    dosportal.asgi.ApiASGIHandler sends `parts` straight to the client, one ASGI message per
    part, without StreamingHttpResponse's own wrapping (two more async generators and a
    re-chunking per part); anything else (WSGI, the test client) iterates it as usual."""

    def __init__(self, parts: AsyncIterator[bytes], abandon: Callable[[], Awaitable[None]] | None = None):
        super().__init__(parts, content_type="text/event-stream")
        self.parts = parts
        self._abandon = abandon

    async def abandon(self) -> None:
        """Settle the call if its stream was never started (a no-op once the relay has settled it)."""
        if self._abandon is not None:
            await self._abandon()


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _error_event(error: ApiError) -> bytes:
    return _sse({"error": {"message": error.message, "type": error.type, "code": error.code}})


_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')


class _Delivered:
    """What reached the client, kept cheaply: raw chunks are parsed only when the delivered text
    has to be estimated (the upstream sent no usage, or a heartbeat reports progress), each
    chunk once. A chunk that cannot be parsed counts as no text, never as an error: the
    settlement must not fail on what the upstream sent."""

    def __init__(self, text_of_raw: Callable[[bytes], str] = lambda raw: _completion_text(json.loads(raw))) -> None:
        self.raw: list[bytes] = []
        self.texts: list[str] = []
        self.text_of_raw = text_of_raw
        self.parsed: list[str] = []  # the text of raw[:raw_parsed]
        self.raw_parsed = 0

    def __bool__(self) -> bool:
        return bool(self.raw or self.texts)

    def _parse_new(self) -> None:
        for raw in self.raw[self.raw_parsed :]:
            with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
                self.parsed.append(self.text_of_raw(raw))
        self.raw_parsed = len(self.raw)

    def text(self) -> str:
        self._parse_new()
        return "".join(self.texts) + "".join(self.parsed)

    def tokens(self) -> int:
        return estimate_text_tokens(self.text())


def _model_renamer(metered: Metered) -> Callable[[bytes], bytes]:
    """Rewrite the upstream's model name to the public one in a raw chunk, structurally:
    `"model":"x"` can only be a key and its value (inside a JSON string quotes are escaped)."""
    upstream, public = json.dumps(metered.model.upstream_name).encode(), json.dumps(metered.model.name).encode()
    if upstream == public:
        return lambda data: data
    pairs = [(key + upstream, key + public) for key in (b'"model":', b'"model": ')]

    def rename(data: bytes) -> bytes:
        for old, new in pairs:
            data = data.replace(old, new)
        return data

    return rename


@dataclass
class _Meter:
    """What a stream has delivered so far, as its forwarder sees it."""

    delivered: _Delivered
    usage: tuple[int, int] | None = None
    finished: bool = False  # a finish reason (or the final event) has passed


async def _metered(
    metered: Metered,
    stream: UpstreamStream,
    forward: AsyncIterator[bytes],
    meter: _Meter,
    *,
    done: bytes,
    error_event: Callable[[ApiError], bytes],
) -> AsyncIterator[bytes]:
    """Relay what `forward` yields; settle once, however the stream ends.

    A stream is charged for what reached the client: the upstream's usage when it sent it,
    otherwise the prompt estimate plus the delivered text. One that ends without a finish
    reason (cut off, or not SSE at all) ends with an error event, not `done`. The settlement
    comes before `done`, so a client that has seen the end sees its charge too. The stream
    counts as in flight while it runs; its first part is timed (time to first token).
    """
    status, settled = 200, False
    with metrics.in_flight(metered.endpoint, stream=True):
        try:
            async for part in forward:
                if metered.first_byte is None:
                    metered.first_byte = time.monotonic()
                yield part
            if not meter.finished:
                raise UpstreamStreamError(
                    errors.upstream_unavailable("The inference server ended the stream before it was complete.")
                )
            await _finish(metered, stream, status)
            settled = True
            if done:
                yield done
        except UpstreamStreamError as error:
            status, metered.error_code = error.api_error.status, error.api_error.code
            await _finish(metered, stream, status)
            settled = True
            yield error_event(metered.public_error(error.api_error))
        except (asyncio.CancelledError, GeneratorExit):
            status, metered.error_code = CLIENT_CLOSED, "client_closed"
            raise
        finally:
            if not settled:
                await _finish(metered, stream, status)
            await forward.aclose()


async def _converted(stream: UpstreamStream, convert: Callable[[bytes], bytes | None]) -> AsyncIterator[bytes]:
    """The stream's events, each converted for the client (None drops it), one part per upstream
    read: what arrived together goes out in one write. A failure that `convert` raises mid-read
    still delivers the events that came before it."""
    async for batch in stream.batches():
        out = []
        try:
            for data in batch:
                part = convert(data.strip())
                if part is not None:
                    out.append(part)
        except UpstreamStreamError:
            if out:
                yield b"".join(out)
            raise
        if out:
            yield b"".join(out)


def _relay(metered: Metered, stream: UpstreamStream) -> AsyncIterator[bytes]:
    """Chat and text completions: ordinary chunks pass through as bytes (model name rewritten,
    finish reason spotted); only chunks that carry usage, or do not look like a JSON object,
    are parsed. Ends with [DONE]."""
    meter = metered.meter = _Meter(_Delivered())
    return _metered(metered, stream, _converted(stream, _completion_chunk(metered, meter)), meter,
                    done=b"data: [DONE]\n\n", error_event=_error_event)  # fmt: skip


def _completion_chunk(metered: Metered, meter: _Meter) -> Callable[[bytes], bytes | None]:
    rename = _model_renamer(metered)
    wants_usage = metered.parsed.client_wants_usage

    def convert(data: bytes) -> bytes | None:
        if b'"usage"' not in data and data.startswith(b"{") and data.endswith(b"}"):
            meter.finished = meter.finished or _FINISHED.search(data) is not None
            meter.delivered.raw.append(data)
            return b"data: " + rename(data) + b"\n\n"
        try:
            chunk = json.loads(data)
        except ValueError:
            return None  # not an event the API defines: drop it rather than confuse SDK parsers
        if not isinstance(chunk, dict):
            return None
        meter.usage = _usage_numbers(chunk.get("usage")) or meter.usage
        meter.finished = meter.finished or _finished(chunk)
        if "model" in chunk:
            chunk["model"] = metered.model.name
        if not wants_usage:
            # We asked the upstream for usage; a client that did not gets the stream it asked for.
            chunk.pop("usage", None)
            if not chunk.get("choices"):
                return None
        meter.delivered.texts.append(_completion_text(chunk))
        return _sse(chunk)

    return convert


def _responses_error_event(error: ApiError) -> bytes:
    """An error as the Responses API streams it; the `error` object also makes the OpenAI SDKs raise."""
    body = {"message": error.message, "type": error.type, "code": error.code}
    payload = {"type": "error", "code": error.code, "message": error.message, "param": None, "error": body}
    return b"event: error\n" + _sse(payload)


def _relay_responses(metered: Metered, stream: UpstreamStream) -> AsyncIterator[bytes]:
    """The Responses API's typed events: usage from the final `response.completed`, the text
    from `response.output_text.delta`, each event with its `event:` line, no [DONE]."""
    meter = metered.meter = _Meter(_Delivered(responses.delta_text))
    return _metered(metered, stream, _converted(stream, _response_event(metered, meter)), meter, done=b"",
                    error_event=_responses_error_event)  # fmt: skip


def _response_event(metered: Metered, meter: _Meter) -> Callable[[bytes], bytes | None]:
    rename = _model_renamer(metered)

    def convert(data: bytes) -> bytes | None:
        kind = responses.event_type(data)
        if kind is None or not data.startswith(b"{"):
            return None  # not an event the API defines
        if kind.decode() in responses.FAILED_TYPES:
            raise UpstreamStreamError(errors.upstream_unavailable("The inference server failed the response."))
        if b'"usage"' in data:
            try:
                event = json.loads(data)
            except ValueError:
                return None
            meter.usage = _usage_numbers(responses.usage_fields(event), "input_tokens", "output_tokens") or meter.usage
            responses.set_public_model(event, metered.model.name)
            data = json.dumps(event, separators=(",", ":")).encode()
        else:
            data = rename(data)
            meter.delivered.raw.append(data)
        meter.finished = meter.finished or responses.FINISHED_RE.search(data) is not None
        return b"event: " + kind + b"\ndata: " + data + b"\n\n"

    return convert


async def _close_quietly(stream: UpstreamStream) -> None:
    try:
        await asyncio.shield(asyncio.ensure_future(stream.aclose()))
    except Exception as error:  # noqa: BLE001 - closing a broken upstream connection may fail
        logger.debug("closing upstream stream: %r", error)


async def _finish(metered: Metered, stream: UpstreamStream, status: int) -> None:
    await _close_quietly(stream)
    await metered.settle(status, *metered.progress(), charge=True)


__all__ = ["ApiCall", "EventStream", "get_model", "list_models", "proxy", "rate_limit_headers"]
