"""Rotate API keys: each selected key gets a successor, the old key keeps working for a
grace period, and the new plain keys are printed once.

    python manage.py rotate_keys --user alice --grace 24h
    python manage.py rotate_keys --older-than 90d --dry-run
    python manage.py rotate_keys --key sk-gw-AbC123 --key 42 --grace 0
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from keys.models import APIKey
from keys.services import MAX_GRACE, api_key_regenerate

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> timedelta:
    match = _DURATION.match(value.strip().lower())
    if not match:
        raise CommandError(f"{value!r} is not a duration such as 3600, 90s, 15m, 24h or 7d")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


class Command(BaseCommand):
    help = (
        "Rotate API keys (by user, key or age): issue a new key for each, keep the old one valid for a "
        "grace period (--grace, default 24h; then the relay refuses it), and print the new keys once. "
        "Only active keys that have not been replaced yet are rotated."
    )

    def add_arguments(self, parser):
        parser.add_argument("--user", action="append", default=[], help="Username or id (repeatable).")
        parser.add_argument("--key", action="append", default=[], help="Key id or prefix (repeatable).")
        parser.add_argument("--older-than", help="Only keys created longer ago than this (e.g. 90d).")
        parser.add_argument("--all", action="store_true", help="Every active key (with no other filter).")
        parser.add_argument("--grace", default="24h", help="How long old keys keep working (default 24h).")
        parser.add_argument(
            "--dry-run", action="store_true", help="Show what would be rotated; change nothing."
        )

    def handle(self, *args, **options):
        grace = parse_duration(options["grace"])
        if grace > MAX_GRACE:
            raise CommandError(f"--grace can be at most {MAX_GRACE.days} days")
        if not (options["user"] or options["key"] or options["older_than"] or options["all"]):
            raise CommandError("choose keys with --user, --key, --older-than, or --all")
        keys = self._select(options)
        total = len(keys)
        verb = "would rotate" if options["dry_run"] else "rotating"
        self.stdout.write(f"{total} key(s) selected; grace period {grace}")
        rotated, failed = 0, []
        for index, key in enumerate(keys, start=1):
            label = f"[{index}/{total}] {key.user.username} {key.prefix}… ({key.name or 'unnamed'})"
            if options["dry_run"]:
                self.stdout.write(f"{label}: {verb}")
                continue
            try:
                issued = api_key_regenerate(key=key, grace=grace)
            except ValidationError as exc:
                failed.append(key)
                self.stderr.write(f"{label}: not rotated: {' '.join(exc.messages)}")
                continue
            rotated += 1
            self.stdout.write(f"{label} -> {issued.plain}")
        if options["dry_run"]:
            self.stdout.write(
                self.style.SUCCESS(f"dry run: {total} key(s) would be rotated; nothing changed")
            )
            return
        until = f"{timezone.localtime(timezone.now() + grace):%Y-%m-%d %H:%M:%S %Z}"
        self.stdout.write(
            self.style.SUCCESS(
                f"rotated {rotated} key(s), {len(failed)} failed; the old keys work until {until}. "
                "The new keys above are shown only this once."
            )
        )
        if failed:
            raise CommandError(f"{len(failed)} key(s) could not be rotated")

    def _select(self, options) -> list[APIKey]:
        now = timezone.now()
        keys = (
            APIKey.objects.select_related("user")
            .filter(status=APIKey.Status.ACTIVE, replaced_by__isnull=True)
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
            .filter(Q(valid_until__isnull=True) | Q(valid_until__gt=now))
        )
        if options["user"]:
            users = [self._user(value) for value in options["user"]]
            keys = keys.filter(user__in=users)
        if options["key"]:
            ids = [self._key_id(value) for value in options["key"]]
            keys = keys.filter(pk__in=ids)
        if options["older_than"]:
            keys = keys.filter(created_at__lt=now - parse_duration(options["older_than"]))
        return list(keys.order_by("user__username", "id"))

    def _user(self, value: str) -> User:
        user = User.objects.filter(username=value).first()
        if user is None and value.isdigit():
            user = User.objects.filter(pk=int(value)).first()
        if user is None:
            raise CommandError(f"no user {value!r}")
        return user

    def _key_id(self, value: str) -> int:
        if value.isdigit() and len(value) <= 18:
            return int(value)
        prefix = value.rstrip("…").rstrip(".")
        matches = list(APIKey.objects.filter(prefix__startswith=prefix).values_list("pk", flat=True)[:2])
        if not matches:
            raise CommandError(f"no key with prefix {value!r}")
        if len(matches) > 1:
            raise CommandError(f"prefix {value!r} matches several keys; use the key id")
        return matches[0]
