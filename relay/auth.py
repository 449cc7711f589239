"""Who is calling: the API key from the headers, looked up in the in-process cache, with
a per-address block after repeated failures."""

from __future__ import annotations

import logging
import time

from django.conf import settings

from keys.services import hash_key

from .config import CONFIG, KeyInfo
from .db import db_async
from .errors import RelayError
from .forward import in_background
from .http import Context

logger = logging.getLogger("relay")

TOUCH_INTERVAL = 60.0  # last_used_at is written at most this often per key and worker
MAX_BLOCKED = 10_000
MAX_DIGESTS = 10_000  # presented keys whose digest is kept (cleared when full)


def _touch_key(key_id: int) -> None:
    from django.utils import timezone

    from keys.models import APIKey

    APIKey.objects.filter(pk=key_id).update(last_used_at=timezone.now())  # no signal: no cache flush


def _blocked_error(until: float) -> RelayError:
    wait = max(int(until - time.time() + 0.999), 1)
    return RelayError(
        429,
        "Too many failed authentication attempts from this address; try again later.",
        code="too_many_auth_failures",
        headers=[(b"retry-after", str(wait).encode())],
    )


def presented_key(ctx: Context) -> str:
    """The key from ``Authorization: Bearer``, ``x-api-key`` or ``mj-api-secret``."""
    headers = ctx.headers
    raw = headers.get(b"authorization")
    if raw is not None:
        scheme, _, value = raw.partition(b" ")
        if scheme.lower() == b"bearer" and value.strip():
            return value.strip().decode("latin-1")
    value = headers.get(b"x-api-key") or headers.get(b"mj-api-secret")
    if value and value.strip():
        return value.strip().decode("latin-1")
    raise RelayError(
        401,
        "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'.",
        code="missing_api_key",
    )


class Authenticator:
    def __init__(self) -> None:
        self.touched: dict[int, float] = {}
        self.blocked: dict[str, float] = {}  # client IP -> end of its block (failed authentication)
        self.digests: dict[str, str] = {}  # presented key -> its SHA-256, what the cache is keyed by

    async def _key(self, ctx: Context) -> KeyInfo:
        presented = presented_key(ctx)
        digest = self.digests.get(presented)
        if digest is None:  # a key not seen lately: SHA-256 it once, not on every request
            if len(self.digests) >= MAX_DIGESTS:
                self.digests.clear()
            digest = self.digests[presented] = hash_key(presented)
        key = await CONFIG.key(digest)
        if key is None:
            raise RelayError(401, "Incorrect API key provided.", code="invalid_api_key")
        refusal = key.refusal(time.time())
        if refusal is not None:
            status, code, message = refusal
            raise RelayError(status, message, code=code)
        return key

    async def authenticate(self, ctx: Context, store) -> None:
        ip = ctx.client_ip or "-"
        blocked_until = self.blocked.get(ip)
        if blocked_until is not None:
            if blocked_until > time.time():
                raise _blocked_error(blocked_until)
            del self.blocked[ip]
        try:
            key = await self._key(ctx)
        except RelayError as exc:
            if exc.status == 401:
                try:
                    failures = await store.count_auth_failure(ip)
                except Exception:  # the store is down: the 401 stands, only the count is lost
                    logger.warning("failed-authentication count unavailable", exc_info=True)
                    failures = 0
                if failures > settings.RELAY_AUTH_FAILURES_PER_MINUTE:
                    until = (time.time() // 60 + 1) * 60
                    if len(self.blocked) > MAX_BLOCKED:
                        self.blocked = {k: v for k, v in self.blocked.items() if v > time.time()}
                    self.blocked[ip] = until
                    raise _blocked_error(until) from None
            raise
        if not key.ip_allowed(ctx.client_ip):
            raise RelayError(
                403, f"This API key may not be used from {ctx.client_ip}.", code="ip_not_allowed"
            )
        ctx.key = key
        now = time.monotonic()
        if now - self.touched.get(key.id, -TOUCH_INTERVAL) >= TOUCH_INTERVAL:
            self.touched[key.id] = now
            in_background(db_async(_touch_key, thread_sensitive=False)(key.id))
