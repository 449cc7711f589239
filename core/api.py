"""Shared plumbing of the management API (``/auth/``, ``/api/me/``, ``/api/admin/``).

Pagination, the money and id fields, permissions, list helpers, the failed-login limiter and
the exception handler that turns Django's ``ValidationError`` (raised by services and
``full_clean``) into DRF's 400 format. Views stay thin: input serializer, one service or
selector call, output serializer.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import exceptions, permissions, serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from core.money import decimal_str, input_str, to_nanos
from core.web import client_ip

MAX_ID = 2**63 - 1
# Amounts accepted by the API: at most a billion currency units (1e18 nanos) either way,
# so sums of them stay far inside a 64-bit integer column.
MAX_AMOUNT = 10**18
_AMOUNT_RE = re.compile(r"^[+-]?\d{1,19}(\.\d{1,9})?$")
AMOUNT_PATTERN = r"^-?\d{1,10}(\.\d{1,9})?$"


# --- errors ----------------------------------------------------------------------------------


def exception_handler(exc, context):
    """DRF's handler, plus Django's ValidationError (from services) as a 400 in DRF's format."""
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(serializers.as_serializer_error(exc))
    elif isinstance(exc, ProtectedError):
        exc = Conflict(exc.args[0] if exc.args else None)
    if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, list):
        # always an object, as a serializer's own errors are: {"non_field_errors": [...]}
        exc.detail = {api_settings.NON_FIELD_ERRORS_KEY: exc.detail}
    return drf_exception_handler(exc, context)


class Conflict(exceptions.APIException):
    status_code = 409
    default_detail = "This object is in use and cannot be deleted."
    default_code = "conflict"


def amount_str(nanos: int) -> str:
    """Nanos as the API's decimal string, always with 9 places: ``"12.500000000"``, ``"0.000000000"``."""
    return decimal_str(nanos)


# --- fields ----------------------------------------------------------------------------------


@extend_schema_field(
    {"type": "string", "pattern": AMOUNT_PATTERN, "example": "12.500000000", "format": "decimal"}
)
class MoneyField(serializers.Field):
    """Exact money: integer nanos inside, a decimal string outside (``"12.500000000"``).

    Accepts a decimal string (or an integer of currency units) with at most 9 decimal
    places; never a float, which could not be exact.
    """

    default_error_messages = {
        "invalid": 'Enter an amount as a decimal string with at most 9 decimal places, e.g. "12.50".',
        "min_value": "Ensure this amount is at least {min_value}.",
        "max_value": "Ensure this amount is at most {max_value}.",
    }

    def __init__(self, *, min_value: int | None = None, max_value: int | None = None, **kwargs):
        self.min_value = -MAX_AMOUNT if min_value is None else min_value
        self.max_value = MAX_AMOUNT if max_value is None else max_value
        super().__init__(**kwargs)

    def to_representation(self, value):
        return None if value is None else amount_str(value)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, str | int):
            self.fail("invalid")
        text = str(data).strip()
        if not _AMOUNT_RE.match(text):
            self.fail("invalid")
        try:
            nanos = to_nanos(text)
        except ValueError:
            self.fail("invalid")
        if nanos < self.min_value:
            self.fail("min_value", min_value=input_str(self.min_value))
        if nanos > self.max_value:
            self.fail("max_value", max_value=input_str(self.max_value))
        return nanos


class IdField(serializers.IntegerField):
    """A primary key: a positive 64-bit integer (larger numbers are a 400, not a database error)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(**kwargs)


def _no_nul(value, path: str = "") -> None:
    """PostgreSQL cannot store NUL characters in text or JSON: refuse them anywhere."""
    if isinstance(value, str):
        if "\x00" in value:
            raise serializers.ValidationError(f"{path or 'value'}: NUL characters are not allowed.")
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key, path)
            _no_nul(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _no_nul(item, f"{path}[{index}]")


@extend_schema_field({"type": "object", "additionalProperties": True})
class JSONObjectField(serializers.JSONField):
    """A JSON object (headers, parameters, metadata): nested values allowed, NUL characters not."""

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        if not isinstance(data, dict):
            raise serializers.ValidationError("Expected a JSON object.")
        _no_nul(data)
        return data


@extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
class HeadersField(JSONObjectField):
    """HTTP headers to add upstream: an object of string values."""

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        for name, value in data.items():
            if not isinstance(value, str) or not name or "\n" in name + value or "\r" in name + value:
                raise serializers.ValidationError(
                    f"{name!r}: header names and values are single-line strings."
                )
        return data


# --- permissions -----------------------------------------------------------------------------


class IsActiveUser(permissions.BasePermission):
    """Logged in, and the account is active (a suspended account sees nothing)."""

    message = "Your account is not active."

    def has_permission(self, request, view):
        user = request.user
        return bool(
            user and user.is_authenticated and user.is_active and getattr(user, "status", "") == "active"
        )


class IsStaff(IsActiveUser):
    message = "Only staff may use this endpoint."

    def has_permission(self, request, view):
        return super().has_permission(request, view) and request.user.is_staff


# --- lists -----------------------------------------------------------------------------------


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class ListQuerySerializer(serializers.Serializer):
    """Query parameters every list endpoint takes; subclasses add filters and ``ordering``."""

    page = serializers.IntegerField(required=False, min_value=1, max_value=10**9)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=Pagination.max_page_size)


def ordering_field(*names: str, default: str) -> serializers.ChoiceField:
    """``ordering`` query parameter: one of ``names``, ascending, or descending with ``-``."""
    choices = [value for name in names for value in (name, f"-{name}")]
    return serializers.ChoiceField(
        choices=choices, required=False, default=default, help_text="Sort key; prefix with - to reverse."
    )


def query(serializer_class: type[serializers.Serializer], request) -> dict:
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def body(serializer_class: type[serializers.Serializer], request, **kwargs) -> dict:
    serializer = serializer_class(data=request.data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def paginated_response(*, request, view, queryset, serializer_class, context: dict | None = None) -> Response:
    paginator = Pagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    data = serializer_class(page, many=True, context={"request": request, **(context or {})}).data
    return paginator.get_paginated_response(data)


_PAGINATED: dict[type, serializers.Serializer] = {}


def paginated(serializer_class: type[serializers.Serializer]):
    """The schema of a page of ``serializer_class`` (``count``, ``next``, ``previous``, ``results``)."""
    if serializer_class not in _PAGINATED:
        name = serializer_class.__name__.removesuffix("Serializer")
        _PAGINATED[serializer_class] = inline_serializer(
            name=f"Paginated{name}List",
            fields={
                "count": serializers.IntegerField(),
                "next": serializers.URLField(allow_null=True),
                "previous": serializers.URLField(allow_null=True),
                "results": serializer_class(many=True),
            },
        )
    return _PAGINATED[serializer_class]


# --- failed logins ---------------------------------------------------------------------------


class LoginAttempt:
    """One login attempt, counted before the password is checked: ``wait`` is set (seconds)
    when it is over a limit and must be refused without checking; a successful one calls
    ``succeeded`` to give its counts back."""

    def __init__(self, slots: list[tuple[str, str]], wait: float | None) -> None:
        self.slots = slots  # (scope, cache key of this window's counter)
        self.wait = wait

    def succeeded(self) -> None:
        for scope, slot in self.slots:
            if scope == "login_username":
                cache.delete_many([slot, slot + ":since"])  # this user from this address: a clean slate
            else:
                with contextlib.suppress(ValueError):  # the window may have ended meanwhile
                    cache.decr(slot)  # the address counts failures, not successes


class LoginLimiter:
    """Limits failed logins per client IP and per username *and* client IP, in the shared
    cache, with atomic counters (``cache.add`` + ``cache.incr``; Redis or the in-process
    cache). Every attempt is counted before the password is checked, so concurrent wrong
    passwords cannot all slip past the check; a success gives its counts back. The rates
    are REST_FRAMEWORK's ``login_ip`` and ``login_username`` (e.g. ``10/min``; a window
    starts with its first attempt). A locked username stays open to its owner from another address: nobody can
    lock someone else out. Used by the API login, the password change and the dashboard.
    """

    scopes = ("login_ip", "login_username")

    @staticmethod
    def _rate(scope: str) -> tuple[int, int]:
        """(attempts, seconds) from a DRF-style rate such as ``10/min``."""
        rate = settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES", {}).get(scope, "10/min")
        count, period = rate.split("/")
        return int(count), {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[0]]

    @staticmethod
    def _keys(meta, username) -> dict[str, str]:
        ip = client_ip(meta)
        keys = {"login_ip": "login-attempts:ip:" + ip}
        if isinstance(username, str) and username.strip():
            who = f"{username.strip().lower()}|{ip}"
            keys["login_username"] = "login-attempts:user-ip:" + hashlib.sha256(who.encode()).hexdigest()[:32]
        return keys

    @staticmethod
    def _count(slot: str, window: int, now: float) -> tuple[int, float]:
        """Counts one attempt in ``slot``'s window, which starts with its first attempt (no
        calendar boundary a burst could straddle for twice the limit); returns the count and
        the seconds until the window ends."""
        for _ in range(3):
            cache.add(slot + ":since", now, timeout=window)
            cache.add(slot, 0, timeout=window)
            try:
                count = cache.incr(slot)
            except ValueError:  # expired between add and incr
                continue
            since = cache.get(slot + ":since", now)
            return count, max(window - (now - since), 1.0)
        return 1, float(window)

    @classmethod
    def begin(cls, meta, username) -> LoginAttempt:
        now = time.time()
        slots: list[tuple[str, str]] = []
        wait = None
        for scope, key in cls._keys(meta, username).items():
            limit, window = cls._rate(scope)
            slots.append((scope, key))
            count, left = cls._count(key, window, now)
            if count > limit:
                wait = max(wait or 0.0, left)
        return LoginAttempt(slots, wait)
