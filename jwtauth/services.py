"""Writes on API sessions: issue a token pair, rotate a refresh token, end a session."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from django.contrib.auth import get_user_model
from django.contrib.auth.models import update_last_login
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.state import token_backend
from rest_framework_simplejwt.utils import get_md5_hash_password

from accounts.selectors import user_can_authenticate

from .models import RevokedToken
from .tokens import SESSION_CLAIM, RefreshToken


def _expiry(payload: dict) -> datetime:
    return datetime.fromtimestamp(int(payload.get("exp", 0)), tz=UTC)


def _revoke(*, identifier: str, kind: str, user_id, expires_at: datetime) -> bool:
    """Record a revocation; False when it was already there (a concurrent use)."""
    RevokedToken.objects.filter(expires_at__lt=timezone.now()).delete()  # expired ones mean nothing
    try:
        with transaction.atomic():
            RevokedToken.objects.create(
                identifier=identifier, kind=kind, user_id=user_id, expires_at=expires_at
            )
    except IntegrityError:
        return False
    return True


def token_pair_issue(*, user) -> dict[str, str]:
    """A new login session: a refresh token and an access token sharing a session id."""
    refresh = RefreshToken.for_user(user)
    refresh[SESSION_CLAIM] = uuid.uuid4().hex
    if api_settings.UPDATE_LAST_LOGIN:
        update_last_login(None, user)
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def _end_session_of_reused_token(raw: str) -> None:
    """A rotated refresh token presented again was probably stolen: end its whole session."""
    try:
        payload = token_backend.decode(raw, verify=True)
    except Exception:  # noqa: BLE001 - a bad signature or an expired token: nothing to end
        return
    sid, jti = payload.get(SESSION_CLAIM), payload.get("jti")
    if sid and jti and RevokedToken.objects.filter(identifier=jti, kind=RevokedToken.Kind.REFRESH).exists():
        _revoke(
            identifier=sid,
            kind=RevokedToken.Kind.SESSION,
            user_id=payload.get(api_settings.USER_ID_CLAIM),
            expires_at=_expiry(payload),
        )


def token_refresh(*, refresh: str) -> dict[str, str]:
    """A new access token (and, with ROTATE_REFRESH_TOKENS, a new refresh token; the old one
    is used up). Raises TokenError for an invalid, expired, used or revoked token."""
    try:
        token = RefreshToken(refresh)
    except TokenError:
        _end_session_of_reused_token(refresh)
        raise
    user = get_user_model().objects.filter(pk=token.payload.get(api_settings.USER_ID_CLAIM)).first()
    if user is None or not user_can_authenticate(user):
        raise TokenError("No active account found for the given token.")
    if api_settings.CHECK_REVOKE_TOKEN and token.payload.get(
        api_settings.REVOKE_TOKEN_CLAIM
    ) != get_md5_hash_password(user.password):
        raise TokenError("The user's password has been changed.")
    if not api_settings.ROTATE_REFRESH_TOKENS:
        return {"access": str(token.access_token)}
    used = _revoke(
        identifier=token.payload["jti"],
        kind=RevokedToken.Kind.REFRESH,
        user_id=user.pk,
        expires_at=_expiry(token.payload),
    )
    if not used:
        raise TokenError("Token is blacklisted")
    token.set_jti()
    token.set_exp()
    token.set_iat()
    return {"access": str(token.access_token), "refresh": str(token)}


def token_session_end(*, refresh: str) -> None:
    """Log out: the session of this refresh token ends, its access tokens included."""
    token = RefreshToken(refresh)
    payload = token.payload
    identifier = payload.get(SESSION_CLAIM) or payload["jti"]
    kind = RevokedToken.Kind.SESSION if payload.get(SESSION_CLAIM) else RevokedToken.Kind.REFRESH
    _revoke(
        identifier=identifier,
        kind=kind,
        user_id=payload.get(api_settings.USER_ID_CLAIM),
        expires_at=_expiry(payload),
    )
