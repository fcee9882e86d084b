"""The /v1 endpoints: thin async views over dosportal.v1.gateway."""

from __future__ import annotations

import functools
import logging
import re
import uuid
from collections.abc import Awaitable, Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from billing.models import ServedModel
from dosportal.v1 import errors, gateway
from dosportal.v1.errors import ApiError
from dosportal.v1.validation import parse_chat, parse_completion, parse_embedding

logger = logging.getLogger(__name__)

AsyncView = Callable[..., Awaitable[HttpResponse]]
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,100}$")
DEV_MODEL_NOTE = "Built-in development model: deterministic replies, not a real language model."


def _request_id(request: HttpRequest) -> str:
    """The client's x-request-id when it is a sane token, else a new one."""
    given = request.headers.get("x-request-id", "")
    return given if REQUEST_ID_RE.fullmatch(given) else f"req_{uuid.uuid4().hex}"


def api_endpoint(*methods: str) -> Callable[[AsyncView], AsyncView]:
    """Method check, the one error shape, x-request-id and rate-limit headers on every response."""

    def decorator(view: AsyncView) -> AsyncView:
        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
            request.request_id = _request_id(request)  # type: ignore[attr-defined]
            request.rate_limit = None  # type: ignore[attr-defined]
            request.api_key = None  # type: ignore[attr-defined]
            try:
                if methods and request.method not in methods:
                    raise errors.method_not_allowed(request.method or "", list(methods))
                response = await view(request, *args, **kwargs)
            except ApiError as error:
                response = error.response()
            except Exception:
                logger.exception("unhandled error in /v1 (request %s)", request.request_id)
                response = errors.internal_error().response()
            response["x-request-id"] = request.request_id
            if request.rate_limit is None and request.api_key is not None:
                request.rate_limit = await gateway.rate_limit_state(request.api_key)
            if request.rate_limit is not None:
                for name, value in request.rate_limit.headers().items():
                    response[name] = value
            return response

        return wrapper

    return decorator


def _model_object(model: ServedModel) -> dict[str, object]:
    dev = not settings.DOS_AI_UPSTREAM_URL
    described: dict[str, object] = {
        "id": model.name,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": "dos-ai-development-model" if dev else "dos-ai",
    }
    if dev:
        described["description"] = DEV_MODEL_NOTE
    return described


async def _admit_listing(request: HttpRequest) -> None:
    api_key = await gateway.authenticate(request)
    await gateway.admit(request, api_key, token_cost=0)


@api_endpoint("GET")
async def models(request: HttpRequest) -> HttpResponse:
    await _admit_listing(request)
    return JsonResponse({"object": "list", "data": [_model_object(m) for m in await gateway.list_models()]})


@api_endpoint("GET")
async def model_detail(request: HttpRequest, model_id: str) -> HttpResponse:
    await _admit_listing(request)
    model = await gateway.get_model(model_id)
    if model is None:
        raise errors.not_found(f"The model '{model_id}' does not exist.", "model_not_found")
    return JsonResponse(_model_object(model))


@api_endpoint("POST")
async def chat_completions(request: HttpRequest) -> HttpResponse:
    return await gateway.proxy(request, endpoint="chat/completions", kind=ServedModel.Kind.CHAT, parse=parse_chat)


@api_endpoint("POST")
async def completions(request: HttpRequest) -> HttpResponse:
    return await gateway.proxy(request, endpoint="completions", kind=ServedModel.Kind.CHAT, parse=parse_completion)


@api_endpoint("POST")
async def embeddings(request: HttpRequest) -> HttpResponse:
    return await gateway.proxy(request, endpoint="embeddings", kind=ServedModel.Kind.EMBEDDING, parse=parse_embedding)


@api_endpoint()
async def not_found(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
    raise errors.not_found(f"Unknown API path: {request.method} {request.path}")
