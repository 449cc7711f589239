"""Probe providers by hand: ``python manage.py test_providers [--name NAME ...] [--all]``."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from providers.health import provider_check, providers_to_check
from providers.models import Provider


class Command(BaseCommand):
    help = "Probe providers; a passing probe re-enables an auto-disabled provider."

    def add_arguments(self, parser):
        parser.add_argument("--name", action="append", default=[], help="Provider name (repeatable).")
        parser.add_argument(
            "--all", action="store_true", help="Include disabled providers and those without checks."
        )

    def handle(self, *args, **options):
        if options["name"]:
            providers = list(Provider.objects.filter(name__in=options["name"]))
            missing = set(options["name"]) - {p.name for p in providers}
            if missing:
                raise CommandError(f"unknown provider(s): {', '.join(sorted(missing))}")
        elif options["all"]:
            providers = list(Provider.objects.all())
        else:
            providers = list(providers_to_check())
        failed = 0
        for index, provider in enumerate(providers, 1):
            before = provider.status
            result = provider_check(provider=provider)
            provider.refresh_from_db()
            outcome = "ok" if result.ok else "FAILED"
            change = f" ({before} -> {provider.status})" if provider.status != before else ""
            detail = f" HTTP {result.status}" if result.status else ""
            error = f": {result.error[:200]}" if result.error else ""
            self.stdout.write(
                f"[{index}/{len(providers)}] {provider.name}: {outcome}{detail} {result.ms} ms{change}{error}"
            )
            failed += not result.ok
        self.stdout.write(f"{len(providers) - failed} passed, {failed} failed")
        if failed:
            raise SystemExit(1)
