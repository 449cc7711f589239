"""simplejwt tokens that honour logouts and rotations (SIMPLE_JWT's AUTH_TOKEN_CLASSES).

Every token of one login carries the same session id (``sid``); logging out revokes it, so
the access tokens of that session stop working at once, not when they expire. A refresh
token is single-use: rotating it revokes its ``jti``.
"""

from __future__ import annotations

from rest_framework_simplejwt import tokens
from rest_framework_simplejwt.exceptions import TokenError

SESSION_CLAIM = "sid"


def is_revoked(*identifiers: str | None) -> bool:
    from .models import RevokedToken

    wanted = [value for value in identifiers if value]
    return bool(wanted) and RevokedToken.objects.filter(identifier__in=wanted).exists()


class AccessToken(tokens.AccessToken):
    def verify(self) -> None:
        super().verify()
        if is_revoked(self.payload.get(SESSION_CLAIM)):
            raise TokenError("This session has ended (logged out).")


class RefreshToken(tokens.RefreshToken):
    access_token_class = AccessToken

    def verify(self) -> None:
        super().verify()
        if is_revoked(self.payload.get("jti"), self.payload.get(SESSION_CLAIM)):
            raise TokenError("Token is blacklisted")
