from celery import shared_task
from django.conf import settings

from . import services


@shared_task(name="conversations.purge_responses", ignore_result=True)
def purge_responses() -> int:
    return services.stored_responses_purge(older_than_days=settings.RESPONSES_RETENTION_DAYS)
