"""Create a user, for scripts.

python manage.py create_user alice --email alice@example.com --password-env ALICE_PASSWORD --credit 10
echo "$PASSWORD" | python manage.py create_user bob --password-stdin --staff
"""

from __future__ import annotations

import os
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import PriceGroup, User
from accounts.services import user_adjust_balance, user_register
from billing.models import BillingRecord
from core.money import format_money, to_nanos


class Command(BaseCommand):
    help = (
        "Create a user (Django's password validators apply). Without a password the account cannot "
        "log in until one is set; it can still own API keys."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument("--full-name", default="")
        password = parser.add_mutually_exclusive_group()
        password.add_argument(
            "--password", help="The password (visible in the process list: prefer the others)."
        )
        password.add_argument("--password-env", metavar="VAR", help="Read the password from this variable.")
        password.add_argument("--password-stdin", action="store_true", help="Read the password from stdin.")
        parser.add_argument(
            "--staff", action="store_true", help="May use the operator console and /api/admin/."
        )
        parser.add_argument("--superuser", action="store_true", help="Every permission (implies --staff).")
        parser.add_argument("--credit", help="Initial balance, e.g. 10.00 (one top-up ledger row).")
        parser.add_argument("--credit-limit", default="0", help="How far below zero the balance may go.")
        parser.add_argument("--group", help="Name of the price group.")
        parser.add_argument("--dry-run", action="store_true", help="Validate and show; create nothing.")

    def handle(self, *args, **options):
        password = self._password(options)
        try:
            credit = to_nanos(options["credit"]) if options["credit"] else 0
            credit_limit = to_nanos(options["credit_limit"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if credit < 0 or credit_limit < 0:
            raise CommandError("--credit and --credit-limit cannot be negative")
        group = None
        if options["group"]:
            group = PriceGroup.objects.filter(name=options["group"]).first()
            if group is None:
                raise CommandError(f"no price group {options['group']!r}")
        username = options["username"]
        self.stdout.write(f"[1/1] {'would create' if options['dry_run'] else 'creating'} user {username}")
        try:
            with transaction.atomic():
                user = user_register(
                    username=username,
                    password=password,
                    email=options["email"],
                    full_name=options["full_name"],
                    is_staff=options["staff"],
                    is_superuser=options["superuser"],
                    credit_limit=credit_limit,
                    group=group,
                )
                if credit:
                    user_adjust_balance(
                        user=user,
                        amount=credit,
                        kind=BillingRecord.Kind.TOPUP,
                        description="initial credit (create_user)",
                    )
                if options["dry_run"]:
                    transaction.set_rollback(True)
        except ValidationError as exc:
            errors = exc.message_dict if hasattr(exc, "error_dict") else {"user": exc.messages}
            messages = [f"{field}: {' '.join(texts)}" for field, texts in errors.items()]
            raise CommandError("; ".join(messages)) from None
        if options["dry_run"]:
            self.stdout.write(self.style.SUCCESS("dry run: the user is valid; nothing created"))
            return
        user = User.objects.get(pk=user.pk)
        self.stdout.write(
            self.style.SUCCESS(
                f"created user {user.username} (id {user.pk}{', staff' if user.is_staff else ''}), "
                f"balance {format_money(user.balance)}"
                + ("" if password else "; no password: it cannot log in until one is set")
            )
        )

    def _password(self, options) -> str:
        if options["password"]:
            return options["password"]
        if options["password_env"]:
            value = os.environ.get(options["password_env"])
            if not value:
                raise CommandError(f"${options['password_env']} is empty or unset")
            return value
        if options["password_stdin"]:
            return sys.stdin.readline().rstrip("\n")
        return ""
