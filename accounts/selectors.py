"""Reads on users."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from .models import User


def user_can_authenticate(user) -> bool:
    """Who may log in and refresh tokens (SIMPLE_JWT's USER_AUTHENTICATION_RULE): an active
    account. Suspended and deleted accounts get the same answer as a wrong password."""
    return user is not None and user.is_active and getattr(user, "status", None) == User.Status.ACTIVE


def user_list(*, filters: dict | None = None) -> QuerySet[User]:
    filters = filters or {}
    users = User.objects.select_related("group")
    if filters.get("status"):
        users = users.filter(status=filters["status"])
    if filters.get("is_staff") is not None:
        users = users.filter(is_staff=filters["is_staff"])
    if filters.get("group"):
        users = users.filter(group_id=filters["group"])
    if filters.get("search"):
        term = filters["search"]
        users = users.filter(
            Q(username__icontains=term) | Q(email__icontains=term) | Q(full_name__icontains=term)
        )
    return users.order_by(filters.get("ordering") or "id", "id")


def user_get(*, user_id: int) -> User | None:
    return User.objects.select_related("group").filter(pk=user_id).first()
