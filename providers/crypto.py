"""Provider credentials at rest: Fernet tokens under CREDENTIALS_KEYS.

The first key encrypts; every listed key decrypts, so a new key can be rolled out in front
of the old one and ``rotate_encryption_key`` re-encrypts the rows before the old key goes.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class CredentialError(Exception):
    pass


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.CREDENTIALS_KEYS))


def encrypt(plain: str) -> str:
    if not plain:
        return ""
    return fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise CredentialError(
            "provider credentials cannot be decrypted with CREDENTIALS_KEYS (was a key removed too early?)"
        ) from None


def reencrypt(token: str) -> str:
    """The same secret under the current first key."""
    if not token:
        return ""
    try:
        return fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise CredentialError("provider credentials cannot be decrypted with CREDENTIALS_KEYS") from None
