"""`POST /hooks/github/secret-scanning/`: GitHub's secret-scanning partner endpoint.

GitHub posts a JSON array of `{token, type, url, source}` signed with one of its published
keys (apikeys.github_scanning). The body is checked whole before anything is done — size,
signature, shape — so a bad request revokes nothing. Refusals use the /v1 error shape:

- 413 `request_too_large`: the body is over DOS_AI_SECRET_SCANNING_MAX_BYTES;
- 401 `invalid_signature`: a missing or bad signature, or an unknown key identifier;
- 400 `invalid_json` / `invalid_value`: the body is not a JSON array of report objects;
- 503 `service_unavailable`: our copy of GitHub's public keys is missing or unreadable
  (GitHub retries; the operator runs `refresh_github_scanning_keys`).

An accepted report is answered 200 with GitHub's feedback array (apikeys.leaks).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from apikeys.github_scanning import KeysFileError, SignatureError, verify_report
from apikeys.leaks import LeakReport, leaked_keys_report

logger = logging.getLogger("apikeys.hooks")

MAX_REPORTS = 1000  # tokens in one report; GitHub batches a handful
FIELD_MAX_LENGTH = 2000


def _refusal(status: int, message: str, type_: str, code: str) -> JsonResponse:
    return JsonResponse({"error": {"message": message, "type": type_, "code": code}}, status=status)


def _reports(body: bytes) -> list[LeakReport] | JsonResponse:
    try:
        document: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _refusal(400, "The body is not JSON.", "invalid_request_error", "invalid_json")
    if not isinstance(document, list) or not 0 < len(document) <= MAX_REPORTS:
        return _refusal(
            400,
            f"The body must be a JSON array of 1 to {MAX_REPORTS} reports.",
            "invalid_request_error",
            "invalid_value",
        )
    reports = []
    for entry in document:
        fields = {name: entry.get(name, "") if isinstance(entry, dict) else None for name in ("token", "type", "url")}
        source = entry.get("source", "") if isinstance(entry, dict) else ""
        if not all(isinstance(value, str) and len(value) <= FIELD_MAX_LENGTH for value in (*fields.values(), source)):
            return _refusal(
                400,
                "Each report must be an object with string fields token, type, url (and source).",
                "invalid_request_error",
                "invalid_value",
            )
        if not fields["token"]:
            return _refusal(400, "A report has no token.", "invalid_request_error", "missing_field")
        reports.append(LeakReport(fields["token"], fields["type"], fields["url"], source))
    return reports


@csrf_exempt  # signed by GitHub instead: there is no session to forge
@require_POST
def github_secret_scanning(request: HttpRequest) -> JsonResponse:
    limit = settings.DOS_AI_SECRET_SCANNING_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    body = b"" if declared > limit else request.read(limit + 1)
    if declared > limit or len(body) > limit:
        return _refusal(413, f"The report is larger than {limit} bytes.", "invalid_request_error", "request_too_large")
    try:
        verify_report(
            body=body,
            key_identifier=request.headers.get("Github-Public-Key-Identifier", "").strip(),
            signature=request.headers.get("Github-Public-Key-Signature", "").strip(),
            keys_path=settings.DOS_AI_GITHUB_SECRET_SCANNING_KEYS,
        )
    except SignatureError as error:
        return _refusal(401, f"Refused: {error}.", "authentication_error", "invalid_signature")
    except KeysFileError as error:
        logger.error("GitHub secret-scanning report refused, run refresh_github_scanning_keys: %s", error)
        return _refusal(
            503, "GitHub's public keys are not available here yet.", "service_unavailable", "service_unavailable"
        )
    reports = _reports(body)
    if isinstance(reports, JsonResponse):
        return reports
    return JsonResponse(leaked_keys_report(reports=reports, reporter="GitHub secret scanning"), safe=False)
