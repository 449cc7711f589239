"""``python manage.py purge_usage_logs [--days N] [--dry-run]``"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from billing import services
from billing.models import UsageLog


class Command(BaseCommand):
    help = "Delete usage logs older than USAGE_LOG_RETENTION_DAYS (daily roll-ups are kept)."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None, help="Override the retention in days.")
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args, **options):
        days = options["days"] if options["days"] is not None else settings.USAGE_LOG_RETENTION_DAYS
        if days <= 0:
            self.stdout.write("retention is off (0 days): nothing to do")
            return
        due = UsageLog.objects.filter(created_at__lt=timezone.now() - timedelta(days=days)).count()
        if options["dry_run"]:
            self.stdout.write(f"would delete {due} usage log(s) older than {days} days")
            return
        deleted = services.usage_logs_purge(
            older_than_days=days, progress=lambda n: self.stderr.write(f"deleted {n}/{due}")
        )
        self.stdout.write(f"deleted {deleted} usage log(s) older than {days} days")
