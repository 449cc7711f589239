from django.contrib import admin

from .models import Quota, QuotaUsage


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    list_display = ["id", "api_key", "user", "metric", "period", "limit", "reset_time", "status"]
    list_filter = ["metric", "period", "status"]
    search_fields = ["api_key__prefix", "user__username"]
    raw_id_fields = ["api_key", "user"]


@admin.register(QuotaUsage)
class QuotaUsageAdmin(admin.ModelAdmin):
    list_display = ["quota", "period_start", "period_end", "used", "updated_at"]
    date_hierarchy = "period_start"
    raw_id_fields = ["quota"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
