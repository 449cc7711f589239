"""Create an API key for a user, for scripts: the plain key is the last line printed
(the only line with --quiet).

    KEY=$(python manage.py create_key alice --name ci --expires-in 90d --quiet)
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.models import User
from core.money import to_nanos
from keys.management.commands.rotate_keys import parse_duration
from keys.services import api_key_create, validate_allowed_ips


def _csv(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


class Command(BaseCommand):
    help = "Create an API key for a user and print it once (the last line of output)."

    def add_arguments(self, parser):
        parser.add_argument("user", help="Username or id of the owner.")
        parser.add_argument("--name", default="", help="A name to tell keys apart.")
        parser.add_argument("--expires-in", help="Expiry from now, e.g. 90d (default: never).")
        parser.add_argument("--models", help="Comma-separated allowed model slugs (default: all).")
        parser.add_argument("--ips", help="Comma-separated allowed IPs or CIDR ranges (default: any).")
        parser.add_argument("--rpm", type=int, help="Requests per minute.")
        parser.add_argument("--tpm", type=int, help="Tokens per minute.")
        parser.add_argument("--budget", help="Spending cap, e.g. 5.00.")
        parser.add_argument("--dry-run", action="store_true", help="Validate and show; create nothing.")
        parser.add_argument("--quiet", action="store_true", help="Print only the key.")

    def handle(self, *args, **options):
        user = User.objects.filter(username=options["user"]).first()
        if user is None and options["user"].isdigit():
            user = User.objects.filter(pk=int(options["user"])).first()
        if user is None:
            raise CommandError(f"no user {options['user']!r}")
        if user.status != User.Status.ACTIVE:
            raise CommandError(f"user {user.username!r} is {user.status}")
        fields = {
            "name": options["name"],
            "expires_at": timezone.now() + parse_duration(options["expires_in"])
            if options["expires_in"]
            else None,
            "allowed_models": _csv(options["models"]),
            "allowed_ips": _csv(options["ips"]),
            "rpm_limit": options["rpm"],
            "tpm_limit": options["tpm"],
        }
        for name in ("rpm", "tpm"):
            if options[name] is not None and options[name] < 1:
                raise CommandError(f"--{name} must be a positive number")
        try:
            fields["budget"] = to_nanos(options["budget"]) if options["budget"] else None
        except ValueError as exc:
            raise CommandError(f"--budget: {exc}") from None
        say = (lambda text: None) if options["quiet"] else self.stdout.write
        try:
            validate_allowed_ips(fields["allowed_ips"])
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        if options["dry_run"]:
            say(f"[1/1] would create a key for {user.username} ({fields['name'] or 'unnamed'})")
            self.stdout.write(self.style.SUCCESS("dry run: nothing created"))
            return
        say(f"[1/1] creating a key for {user.username} ({fields['name'] or 'unnamed'})")
        try:
            issued = api_key_create(user=user, **fields)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        say(
            self.style.SUCCESS(
                f"created key {issued.key.prefix}… (id {issued.key.pk}); it is shown only once:"
            )
        )
        self.stdout.write(issued.plain)
