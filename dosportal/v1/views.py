"""The /v1 endpoints: thin async views over dosportal.v1.gateway, each given one ApiCall."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from billing.models import ServedModel
from dosportal import metrics
from dosportal.v1 import errors, gateway
from dosportal.v1.errors import ApiError
from dosportal.v1.gateway import ApiCall
from dosportal.v1.store import ModelRow, StoreUnavailable
from dosportal.v1.upstream import is_development_model
from dosportal.v1.validation import parse_chat, parse_completion, parse_embedding, parse_responses

logger = logging.getLogger(__name__)

ApiView = Callable[..., Awaitable[HttpResponse]]
DEV_MODEL_NOTE = "Built-in development model: deterministic replies, not a real language model."


# The API path each view serves, as metrics and logs name it ("" for unknown paths).
ENDPOINT_OF_VIEW = {
    "chat_completions": "chat/completions",
    "model_detail": "models",
    "response_by_id": "responses",
    "not_found": "",
}


def api_endpoint(*methods: str) -> Callable[[ApiView], Callable[..., Awaitable[HttpResponse]]]:
    """Method check, one ApiCall per request, the one error shape, and on every response
    `x-request-id` (ours), `x-client-request-id` (the client's, when sane) and the
    rate-limit headers once the key is known."""

    def decorator(view: ApiView) -> Callable[..., Awaitable[HttpResponse]]:
        endpoint = ENDPOINT_OF_VIEW.get(view.__name__, view.__name__)

        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
            call = ApiCall.begin(request)
            code = ""
            try:
                if methods and request.method not in methods:
                    raise errors.method_not_allowed(request.method or "", list(methods))
                with metrics.in_flight(endpoint):
                    response = await view(call, *args, **kwargs)
            except ApiError as error:
                response, code = error.response(), error.code
            except StoreUnavailable:
                response, code = errors.service_unavailable().response(), "service_unavailable"
            except Exception:
                logger.exception("unhandled error in /v1 (request %s)", call.request_id)
                response, code = errors.internal_error().response(), "internal_error"
            if not call.metered:  # a metered call reports when it settles (gateway.Metered)
                gateway.report_unmetered(call, endpoint, response.status_code, code)
            response["x-request-id"] = call.request_id
            if call.client_request_id:
                response["x-client-request-id"] = call.client_request_id
            try:
                limit_headers = await gateway.rate_limit_headers(call)
            except BaseException:
                # Cancelled before the answer left: a stream that will never be sent is settled now.
                if isinstance(response, gateway.EventStream):
                    await response.abandon()
                raise
            for name, value in limit_headers.items():
                response[name] = value
            return response

        return wrapper

    return decorator


def _model_object(model: ModelRow) -> dict[str, object]:
    dev = is_development_model()
    described: dict[str, object] = {
        "id": model.name,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": "dos-ai-development-model" if dev else "dos-ai",
    }
    if dev:
        described["description"] = DEV_MODEL_NOTE
    return described


@api_endpoint("GET")
async def models(call: ApiCall) -> HttpResponse:
    return JsonResponse({"object": "list", "data": [_model_object(m) for m in await gateway.list_models(call)]})


@api_endpoint("GET")
async def model_detail(call: ApiCall, model_id: str) -> HttpResponse:
    return JsonResponse(_model_object(await gateway.get_model(call, model_id)))


@api_endpoint("POST")
async def chat_completions(call: ApiCall) -> HttpResponse:
    return await gateway.proxy(call, endpoint="chat/completions", kind=ServedModel.Kind.CHAT, parse=parse_chat)


@api_endpoint("POST")
async def completions(call: ApiCall) -> HttpResponse:
    return await gateway.proxy(call, endpoint="completions", kind=ServedModel.Kind.CHAT, parse=parse_completion)


@api_endpoint("POST")
async def embeddings(call: ApiCall) -> HttpResponse:
    return await gateway.proxy(call, endpoint="embeddings", kind=ServedModel.Kind.EMBEDDING, parse=parse_embedding)


@api_endpoint("POST")
async def responses(call: ApiCall) -> HttpResponse:
    return await gateway.proxy(call, endpoint="responses", kind=ServedModel.Kind.CHAT, parse=parse_responses)


@api_endpoint()
async def response_by_id(call: ApiCall, response_id: str) -> HttpResponse:
    await gateway.authenticate(call)
    raise errors.not_found(
        "This gateway keeps no responses: retrieving, deleting or cancelling one by id is not supported.",
        "not_found",
    )


@api_endpoint()
async def not_found(call: ApiCall, *args: object, **kwargs: object) -> HttpResponse:
    path = call.request.path.replace("\x00", "")[:200]
    raise errors.not_found(f"Unknown API path: {call.request.method} {path}")
