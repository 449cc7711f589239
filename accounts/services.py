"""Writes on users and their balances. Every balance change writes one ledger row."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F

from billing.models import BillingRecord
from keys.services import api_keys_revoke_for_user

from .models import PriceGroup, User


class BalanceError(Exception):
    pass


@transaction.atomic
def user_adjust_balance(
    *,
    user: User | int,
    amount: int,
    kind: str = BillingRecord.Kind.ADJUSTMENT,
    description: str = "",
    created_by: User | None = None,
    request_id: str | None = None,
    api_key_id: int | None = None,
) -> BillingRecord:
    """Add ``amount`` nanos (negative to deduct) atomically and record it in the ledger.

    The update is a single ``F()`` expression under a row lock, so concurrent adjustments
    never lose each other and ``balance_after`` is the balance this change produced.
    """
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise BalanceError("amount must be an integer number of nanos")
    if amount == 0:
        raise BalanceError("amount must not be zero")
    if kind not in BillingRecord.Kind.values:
        raise BalanceError(f"unknown ledger kind {kind!r}")
    user_id = user.pk if isinstance(user, User) else int(user)
    updated = User.objects.filter(pk=user_id).update(balance=F("balance") + amount)
    if not updated:
        raise BalanceError(f"user {user_id} does not exist")
    balance_after = User.objects.select_for_update().values_list("balance", flat=True).get(pk=user_id)
    record = BillingRecord.objects.create(
        user_id=user_id,
        api_key_id=api_key_id,
        kind=kind,
        amount=amount,
        balance_after=balance_after,
        request_id=request_id,
        description=description[:255],
        created_by=created_by,
    )
    transaction.on_commit(lambda: _mirror_balance(user_id, balance_after, record.pk))
    return record


def _mirror_balance(user_id: int, balance: int, seq: int) -> None:
    """Tell the relay's counter store the new balance (ordered by the ledger row id)."""
    from quotas.counters import Settlement, get_store

    get_store().settled(Settlement(charges=[], balances={user_id: (balance, seq)}))


def user_create(
    *,
    username: str,
    password: str | None,
    email: str = "",
    is_staff: bool = False,
    is_superuser: bool = False,
    credit_limit: int = 0,
) -> User:
    user = User(username=username, email=email, is_staff=is_staff, is_superuser=is_superuser)
    user.credit_limit = credit_limit
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.full_clean(exclude=["password"])
    user.save()
    return user


def user_set_status(*, user: User, status: str) -> User:
    if status not in User.Status.values:
        raise ValueError(f"unknown status {status!r}")
    user.status = status
    user.is_active = status != User.Status.DELETED
    user.save(update_fields=["status", "is_active", "updated_at"])
    return user


PROFILE_FIELDS = ("email", "full_name")
ADMIN_FIELDS = (*PROFILE_FIELDS, "credit_limit", "group", "is_staff")


def _check_password(password: str, *, user: User, field: str = "password") -> None:
    try:
        validate_password(password, user=user)
    except ValidationError as exc:
        raise ValidationError({field: exc.messages}) from None


@transaction.atomic
def user_register(
    *,
    username: str,
    password: str,
    email: str = "",
    full_name: str = "",
    is_staff: bool = False,
    is_superuser: bool = False,
    credit_limit: int = 0,
    group: PriceGroup | None = None,
) -> User:
    """A new account (self-registration, an operator, or ``create_user``): Django's
    password validators apply; ``username`` must be free."""
    if User.objects.filter(username__iexact=username).exists():
        raise ValidationError({"username": ["A user with that username already exists."]})
    if password:
        _check_password(password, user=User(username=username, email=email, full_name=full_name))
    user = user_create(
        username=username,
        password=password or None,
        email=email,
        is_staff=is_staff or is_superuser,
        is_superuser=is_superuser,
        credit_limit=credit_limit,
    )
    if full_name or group is not None:
        user.full_name = full_name
        user.group = group
        user.save(update_fields=["full_name", "group", "updated_at"])
    return user


def user_sign_up(*, username: str, password: str, email: str = "", full_name: str = "") -> User:
    """An account its owner created (``POST /auth/register`` or the dashboard's sign-up),
    credited once with ``SIGNUP_CREDIT`` (a top-up ledger row) in the same transaction."""
    with transaction.atomic():
        user = user_register(username=username, password=password, email=email, full_name=full_name)
        if settings.SIGNUP_CREDIT:
            user_adjust_balance(
                user=user,
                amount=settings.SIGNUP_CREDIT,
                kind=BillingRecord.Kind.TOPUP,
                description="Sign-up credit",
            )
            user.refresh_from_db(fields=["balance"])
    return user


def user_update(*, user: User, data: dict[str, Any], fields: tuple[str, ...] = PROFILE_FIELDS) -> User:
    """Change the given ``fields`` of ``user`` present in ``data`` (others are refused)."""
    unknown = set(data) - set(fields)
    if unknown:
        raise ValidationError({name: ["This field cannot be changed here."] for name in sorted(unknown)})
    if not data:
        return user
    for name, value in data.items():
        setattr(user, name, value)
    user.full_clean(exclude=["password"], validate_unique=False)
    user.save(update_fields=[*data, "updated_at"])
    return user


def user_change_password(*, user: User, new_password: str) -> User:
    """Set a new password. Every JWT issued before carries the old password's hash and
    stops working (SIMPLE_JWT CHECK_REVOKE_TOKEN); so do other Django sessions."""
    _check_password(new_password, user=user, field="new_password")
    user.set_password(new_password)
    user.save(update_fields=["password", "updated_at"])
    return user


@transaction.atomic
def user_delete(*, user: User) -> User:
    """ "Delete" without deleting rows that the ledger and usage logs reference: the account
    is marked deleted and deactivated, its keys are revoked and its password unusable."""
    api_keys_revoke_for_user(user=user)
    user.set_unusable_password()
    user.save(update_fields=["password", "updated_at"])
    return user_set_status(user=user, status=User.Status.DELETED)


def user_suspend(*, user: User) -> User:
    """Suspended: no login, no API, and the relay refuses the account's keys (403)."""
    return user_set_status(user=user, status=User.Status.SUSPENDED)


def user_activate(*, user: User) -> User:
    if user.status == User.Status.DELETED:
        raise ValidationError({"status": ["A deleted account cannot be reactivated."]})
    return user_set_status(user=user, status=User.Status.ACTIVE)
