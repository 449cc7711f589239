"""``python manage.py generate_codes --count 10 --amount 5.00 [--batch NAME] [--expires 2027-01-31]``"""

from __future__ import annotations

from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from billing import services
from core.money import format_money, to_nanos


class Command(BaseCommand):
    help = "Generate redemption codes; prints each code once (only hashes are stored)."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--amount", required=True, help="Credit per code, e.g. 5.00")
        parser.add_argument("--batch", default="")
        parser.add_argument("--expires", help="Expiry date (YYYY-MM-DD, UTC)")
        parser.add_argument("--dry-run", action="store_true", help="Validate and say what would be made.")

    def handle(self, *args, **options):
        try:
            amount = to_nanos(options["amount"])
        except ValueError as exc:
            raise CommandError(f"--amount: {exc}") from None
        if options["count"] < 1:
            raise CommandError("--count must be at least 1")
        expires = None
        if options["expires"]:
            try:
                expires = datetime.fromisoformat(options["expires"]).replace(tzinfo=UTC)
            except ValueError:
                raise CommandError("--expires must be a date such as 2027-01-31") from None
            if expires <= datetime.now(UTC):
                raise CommandError("--expires must be in the future")
        if options["dry_run"]:
            self.stdout.write(f"would generate {options['count']} code(s) of {format_money(amount)}")
            return
        done = []
        remaining = options["count"]
        while remaining > 0:
            step = min(remaining, 1000)
            try:
                done += services.redemption_codes_generate(
                    count=step, amount=amount, batch=options["batch"], expires_at=expires
                )
            except services.RedemptionError as exc:
                raise CommandError(str(exc)) from None
            remaining -= step
            self.stderr.write(f"generated {len(done)}/{options['count']}")
        for code in done:
            self.stdout.write(code)
        self.stderr.write(
            f"{len(done)} code(s) of {format_money(amount)} each, batch {options['batch'] or '-'}"
        )
