from django.contrib import admin

from .models import MidjourneyTask


@admin.register(MidjourneyTask)
class MidjourneyTaskAdmin(admin.ModelAdmin):
    list_display = [
        "task_id",
        "action",
        "status",
        "progress",
        "user",
        "provider",
        "mode",
        "charged",
        "created_at",
    ]
    list_filter = ["status", "action", "mode", "charged"]
    search_fields = ["task_id", "upstream_task_id", "prompt", "user__username"]
    date_hierarchy = "created_at"
    raw_id_fields = ["user", "api_key", "provider", "parent"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
