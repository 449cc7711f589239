from django.contrib import admin, messages

from core.money import format_money

from . import services
from .models import APIKey


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    """Keys are created through the API or ``create_key`` (the plain key is shown once);
    here they are inspected, limited and revoked. The hash is never displayed."""

    list_display = [
        "prefix",
        "name",
        "user",
        "status",
        "expires_at",
        "last_used_at",
        "spent_display",
        "created_at",
    ]
    list_filter = ["status", "created_at"]
    search_fields = ["prefix", "name", "user__username", "user__email"]
    date_hierarchy = "created_at"
    raw_id_fields = ["user", "replaced_by"]
    readonly_fields = [
        "prefix",
        "user",
        "spent_display",
        "last_used_at",
        "created_at",
        "revoked_at",
        "replaced_by",
    ]
    exclude = ["key_hash", "spent"]
    actions = ["revoke_keys"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="spent", ordering="spent")
    def spent_display(self, obj):
        return format_money(obj.spent)

    @admin.action(description="Revoke selected keys")
    def revoke_keys(self, request, queryset):
        count = 0
        for key in queryset:
            services.api_key_revoke(key=key)
            count += 1
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)
