from django.contrib import admin

from .models import StoredResponse, UpstreamResponse


@admin.register(StoredResponse)
class StoredResponseAdmin(admin.ModelAdmin):
    """Read-only: responses are written by the relay and deleted by their owner or the purge."""

    list_display = ["response_id", "created_at", "user", "api_key", "model", "previous_response_id"]
    list_filter = ["model"]
    search_fields = ["response_id", "previous_response_id", "user__username"]
    date_hierarchy = "created_at"
    list_select_related = ["user", "api_key"]
    raw_id_fields = ["user", "api_key"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(UpstreamResponse)
class UpstreamResponseAdmin(admin.ModelAdmin):
    """Read-only: which provider holds a passed-through response (written by the relay)."""

    list_display = ["response_id", "created_at", "user", "provider", "model"]
    list_filter = ["model"]
    search_fields = ["response_id", "user__username"]
    date_hierarchy = "created_at"
    list_select_related = ["user", "provider"]
    raw_id_fields = ["user", "api_key", "provider"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
