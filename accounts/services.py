"""Writes on users and their balances. Every balance change writes one ledger row."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F

from billing.models import BillingRecord

from .models import User


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
