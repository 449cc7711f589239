from django.contrib import admin

from .models import RevokedToken


@admin.register(RevokedToken)
class RevokedTokenAdmin(admin.ModelAdmin):
    list_display = ["identifier", "kind", "user_id", "expires_at", "created_at"]
    list_filter = ["kind"]
    search_fields = ["identifier"]
    readonly_fields = ["identifier", "kind", "user_id", "expires_at", "created_at"]

    def has_add_permission(self, request):
        return False
