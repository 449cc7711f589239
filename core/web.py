"""Request helpers shared by the management API and the probes (``/health``, ``/metrics``),
kept free of DRF: a worker that only relays and answers probes never loads the management
API's modules (docs/decisions.md, "Per-worker memory")."""

from __future__ import annotations

from django.conf import settings

API_PREFIXES = ("/api/", "/auth/")  # paths whose errors are DRF's {"detail": ...}


def client_ip(meta) -> str:
    """The client address, as the relay sees it (X-Forwarded-For only when trusted)."""
    if settings.TRUST_X_FORWARDED_FOR:
        forwarded = meta.get("HTTP_X_FORWARDED_FOR", "")
        first = forwarded.split(",")[0].strip()
        if first:
            return first
    return meta.get("REMOTE_ADDR") or "unknown"
