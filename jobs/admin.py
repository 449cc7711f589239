from django.contrib import admin

from core.admin import MoneyAdminMixin

from .models import MidjourneyTask


@admin.register(MidjourneyTask)
class MidjourneyTaskAdmin(MoneyAdminMixin, admin.ModelAdmin):
    list_display = (
        "task_id",
        "user",
        "action",
        "mode",
        "status",
        "progress",
        "provider",
        "charged",
        "submitted_at",
    )
    list_filter = ("status", "action", "mode", "provider")
    search_fields = ("task_id", "upstream_task_id", "prompt")
    readonly_fields = [f.name for f in MidjourneyTask._meta.fields]
