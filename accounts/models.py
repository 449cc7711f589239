from __future__ import annotations

from decimal import Decimal

from django.contrib.auth.models import AbstractUser, Group, Permission
from django.core.validators import MinValueValidator
from django.db import models

from core.fields import MoneyField


class PriceGroup(models.Model):
    """A user group whose prices are the model prices times ``multiplier``."""

    name = models.SlugField(max_length=64, unique=True)
    multiplier = models.DecimalField(
        max_digits=10, decimal_places=4, default=Decimal("1.0000"), validators=[MinValueValidator(Decimal(0))]
    )
    description = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} (x{self.multiplier.normalize()})"


class User(AbstractUser):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        DELETED = "deleted", "Deleted"

    email = models.EmailField(blank=True, db_index=True)
    full_name = models.CharField(max_length=150, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    balance = MoneyField(default=0, help_text="Exact, in nanos; shown and entered as an amount.")
    credit_limit = MoneyField(
        default=0,
        validators=[MinValueValidator(0)],
        help_text="How far below zero the balance may go (0: requests stop at a zero balance).",
    )
    rpm_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per minute across all of the user's keys; empty: none."
    )
    group = models.ForeignKey(
        PriceGroup,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_constraint=False,
        related_name="users",
    )
    updated_at = models.DateTimeField(auto_now=True)
    # Django's permission joins, redeclared through models without database constraints.
    groups = models.ManyToManyField(
        Group, through="UserGroup", blank=True, related_name="user_set", related_query_name="user"
    )
    user_permissions = models.ManyToManyField(
        Permission, through="UserPermission", blank=True, related_name="user_set", related_query_name="user"
    )

    class Meta:
        indexes = [models.Index(fields=["status", "date_joined"])]

    @property
    def is_usable(self) -> bool:
        return self.status == self.Status.ACTIVE and self.is_active


class UserGroup(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, db_constraint=False)
    group = models.ForeignKey(Group, on_delete=models.CASCADE, db_constraint=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "group"], name="uniq_user_group")]


class UserPermission(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, db_constraint=False)
    permission = models.ForeignKey(Permission, on_delete=models.CASCADE, db_constraint=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "permission"], name="uniq_user_permission")]
