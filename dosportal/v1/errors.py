"""The one error shape of /v1: {"error": {"message", "type", "code"}} for every status."""

from __future__ import annotations

from django.http import JsonResponse


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str, code: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.headers = headers or {}

    def response(self) -> JsonResponse:
        response = error_response(self.status, self.message, self.type, self.code)
        for name, value in self.headers.items():
            response[name] = value
        return response


def error_response(status: int, message: str, type_: str, code: str) -> JsonResponse:
    return JsonResponse({"error": {"message": message, "type": type_, "code": code}}, status=status)


def invalid_api_key(message: str = "Invalid API key") -> ApiError:
    return ApiError(401, message, "authentication_error", "invalid_api_key")


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


def insufficient_balance() -> ApiError:
    return ApiError(
        402,
        "Insufficient credit balance. Add credit to your account to continue.",
        "billing_error",
        "insufficient_balance",
    )


def upstream_unavailable(message: str = "The inference server is unavailable. Try again shortly.") -> ApiError:
    return ApiError(502, message, "upstream_error", "upstream_unavailable")


def upstream_timeout() -> ApiError:
    return ApiError(504, "The inference server did not answer in time.", "upstream_error", "upstream_timeout")


def internal_error() -> ApiError:
    return ApiError(500, "The server had an error processing your request.", "server_error", "internal_error")
