"""Print a Midjourney provider's notify URL: set it as the upstream midjourney-proxy's
notify hook (or set MJ_NOTIFY_BASE_URL and the gateway passes it with every submit)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from jobs.hooks import notify_url
from providers.models import Provider


class Command(BaseCommand):
    help = "Print the notify URL of a Midjourney provider (by id or name)."

    def add_arguments(self, parser):
        parser.add_argument("provider", help="the provider's id or name")
        parser.add_argument(
            "--base-url", default=None, help="the gateway's public URL (default: MJ_NOTIFY_BASE_URL)"
        )

    def handle(self, *args, provider, base_url, **options):
        query = Provider.objects.filter(type="midjourney")
        found = query.filter(pk=int(provider)).first() if provider.isdigit() else None
        found = found or query.filter(name=provider).first()
        if found is None:
            raise CommandError(f"no midjourney provider {provider!r}")
        base = base_url if base_url is not None else settings.MJ_NOTIFY_BASE_URL
        if not base:
            raise CommandError("give --base-url or set MJ_NOTIFY_BASE_URL (the gateway's public URL)")
        self.stdout.write(notify_url(found.pk, base))
