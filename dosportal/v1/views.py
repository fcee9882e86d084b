from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
async def not_found(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"error": {"message": "Not found", "type": "invalid_request_error", "code": "not_found"}}, status=404)
