from __future__ import annotations

from django.db import models


class RevokedToken(models.Model):
    """A refresh token that was used up (rotation) or a whole login session that ended
    (logout). Rows are kept until the token would have expired anyway."""

    class Kind(models.TextChoices):
        REFRESH = "refresh", "Refresh token (rotated)"
        SESSION = "session", "Session (logged out)"

    identifier = models.CharField(
        max_length=64, unique=True, help_text="jti of a refresh token, or a session id."
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    user_id = models.BigIntegerField(null=True, blank=True)
    expires_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.kind} {self.identifier}"
