"""Re-encrypt every provider credential under a new CREDENTIALS_KEYS key.

Roll-out (no downtime; every gateway process must be able to read every row at all times):

1. Make a key:  python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'
2. Put it FIRST in CREDENTIALS_KEYS on every process (web, Celery), the old key after it:
   CREDENTIALS_KEYS=NEW,OLD, and restart them. New writes are now encrypted with NEW; OLD
   still decrypts the existing rows.
3. Run this command with the same environment:
       python manage.py rotate_encryption_key -- NEW    (or NEW_CREDENTIALS_KEY=NEW ...; or no
       argument: the first key of CREDENTIALS_KEYS; "--" lets a key start with "-")
   Every credential is re-encrypted under NEW and checked to decrypt with NEW alone.
   --dry-run checks that every row decrypts and says what would change.
4. When it reports 0 failed, drop OLD: CREDENTIALS_KEYS=NEW, and restart.
"""

from __future__ import annotations

import os

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from providers.models import Provider


class Command(BaseCommand):
    help = (
        "Re-encrypt every provider credential under a new key while the old key still decrypts. "
        "Roll-out: (1) generate a key; (2) set CREDENTIALS_KEYS=NEW,OLD on every process and restart; "
        "(3) run this command with NEW (argument, $NEW_CREDENTIALS_KEY, or the first key of "
        "CREDENTIALS_KEYS); (4) when it reports 0 failed, set CREDENTIALS_KEYS=NEW and restart."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "new_key",
            nargs="?",
            help="The new Fernet key (default: $NEW_CREDENTIALS_KEY, else CREDENTIALS_KEYS[0]).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Check every row decrypts; change nothing."
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Proceed although NEW is not the first key of CREDENTIALS_KEYS (the running gateway "
            "could then not read what this writes, or would keep writing under the old key).",
        )

    def handle(self, *args, **options):
        configured = list(settings.CREDENTIALS_KEYS)
        new_key = options["new_key"] or os.environ.get("NEW_CREDENTIALS_KEY") or configured[0]
        try:
            new = Fernet(new_key.encode())
        except (ValueError, TypeError):
            raise CommandError("the new key is not a Fernet key (32 url-safe base64-encoded bytes)") from None
        if configured[0] != new_key and not options["force"]:
            raise CommandError(
                "the new key is not the first key of CREDENTIALS_KEYS. Set CREDENTIALS_KEYS=NEW,OLD on every "
                "gateway process first (step 2 of the roll-out, see --help), or pass --force."
            )
        keys = [new_key, *[key for key in configured if key != new_key]]
        decrypt = MultiFernet([Fernet(key.encode()) for key in keys])

        providers = list(Provider.objects.exclude(credentials_encrypted="").order_by("id"))
        total = len(providers)
        self.stdout.write(f"{total} provider(s) with credentials; decrypting with {len(keys)} key(s)")
        changed, current, failed = 0, 0, []
        for index, provider in enumerate(providers, start=1):
            label = f"[{index}/{total}] {provider.name}"
            try:
                outcome = self._rotate(provider.pk, new, decrypt, dry_run=options["dry_run"])
            except InvalidToken:
                failed.append(provider.name)
                self.stderr.write(f"{label}: cannot be decrypted with any configured key")
                continue
            if outcome == "current":
                current += 1
                self.stdout.write(f"{label}: already under the new key")
            else:
                changed += 1
                self.stdout.write(f"{label}: {'would re-encrypt' if options['dry_run'] else 're-encrypted'}")
        summary = (
            f"{'would re-encrypt' if options['dry_run'] else 're-encrypted'} {changed}, "
            f"already under the new key {current}, failed {len(failed)}"
        )
        if options["dry_run"]:
            summary = "dry run: " + summary + "; nothing changed"
        if failed:
            raise CommandError(summary + f" ({', '.join(failed)}): keep the old key until they are fixed")
        self.stdout.write(self.style.SUCCESS(summary))

    @staticmethod
    @transaction.atomic
    def _rotate(provider_id: int, new: Fernet, decrypt: MultiFernet, *, dry_run: bool) -> str:
        provider = Provider.objects.select_for_update().get(pk=provider_id)
        token = provider.credentials_encrypted.encode()
        try:
            new.decrypt(token)
            return "current"
        except InvalidToken:
            pass
        plain = decrypt.decrypt(token)  # InvalidToken: no configured key reads it
        if dry_run:
            return "changed"
        rotated = new.encrypt(plain)
        if new.decrypt(rotated) != plain:  # pragma: no cover - Fernet round trip
            raise CommandError(f"verification failed for provider {provider.name}")
        provider.credentials_encrypted = rotated.decode()
        provider.save(update_fields=["credentials_encrypted", "updated_at"])  # the relay's cache hears of it
        return "changed"
