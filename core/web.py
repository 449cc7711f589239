"""Request helpers shared by the management API and the probes (``/health``, ``/metrics``),
kept free of DRF: a worker that only relays and answers probes never loads the management
API's modules (docs/decisions.md, "Per-worker memory")."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponseNotFound, JsonResponse
from django.views.defaults import page_not_found

API_PREFIXES = ("/api/", "/auth/")  # paths whose errors are DRF's {"detail": ...}
# the paths gateway_project.console_urls serves: only these import it
CONSOLE_PREFIXES = ("/admin/", "/auth/", "/api/", "/dashboard/")


def client_ip(meta) -> str:
    """The client address, as the relay sees it (X-Forwarded-For only when trusted)."""
    if settings.TRUST_X_FORWARDED_FOR:
        forwarded = meta.get("HTTP_X_FORWARDED_FOR", "")
        first = forwarded.split(",")[0].strip()
        if first:
            return first
    return meta.get("REMOTE_ADDR") or "unknown"


def not_found(request, exception=None):
    """handler404: DRF's format for unmatched API URLs (e.g. a non-numeric id), Django's page
    under the console's other paths, plain text elsewhere (a scanner's probe, /favicon.ico:
    rendering a template loads every app's template tags, DRF's among them)."""
    if request.path.startswith(API_PREFIXES):
        return JsonResponse({"detail": "Not found."}, status=404)
    if request.path.startswith(CONSOLE_PREFIXES):
        return page_not_found(request, exception)
    return HttpResponseNotFound("Not found.\n", content_type="text/plain; charset=utf-8")
