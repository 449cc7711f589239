"""The Django side of the database failure policy (docs/failure-policy.md).

A view that cannot reach the database answers 503 with Retry-After, as the relay does:
DRF's ``{"detail": ...}`` under ``/api/`` and ``/auth/``, plain text elsewhere, instead of
an HTML 500 page. The connection that failed is dropped so the next request starts afresh.
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse

from core.web import API_PREFIXES
from relay.db import MESSAGE, RETRY_AFTER, reset_connections

logger = logging.getLogger(__name__)


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        logger.warning(
            "database unavailable",
            extra={"path": request.path, "error": f"{type(exception).__name__}: {str(exception)[:200]}"},
        )
        reset_connections()
        if request.path.startswith(API_PREFIXES):
            response = JsonResponse({"detail": MESSAGE}, status=503)
        else:
            response = HttpResponse(MESSAGE, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(RETRY_AFTER)
        return response
