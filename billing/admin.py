from django.contrib import admin

from .models import BillingRecord, DailyUsage, ModelPrice, RedemptionCode, UsageLog
from .money import format_money


class ReadOnlyAdmin(admin.ModelAdmin):
    """Logs and the ledger are written by services only."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = [
        "model",
        "input_per_1m",
        "output_per_1m",
        "cached_input_per_1m",
        "per_request",
        "effective_from",
        "effective_until",
    ]
    list_filter = ["currency"]
    search_fields = ["model__slug", "note"]
    date_hierarchy = "effective_from"
    raw_id_fields = ["model"]


@admin.register(UsageLog)
class UsageLogAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "request_id",
        "user",
        "api_key",
        "model_requested",
        "provider",
        "status_code",
        "prompt_tokens",
        "completion_tokens",
        "cost_display",
        "latency_ms",
        "stream",
    ]
    list_filter = ["status_code", "request_type", "stream", "provider", "model_requested"]
    search_fields = ["request_id", "model_requested", "user__username", "api_key__prefix"]
    date_hierarchy = "created_at"
    list_select_related = ["user", "api_key", "provider"]

    @admin.display(description="cost", ordering="cost")
    def cost_display(self, obj):
        return format_money(obj.cost)


@admin.register(BillingRecord)
class BillingRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "user",
        "kind",
        "amount_display",
        "balance_after_display",
        "request_id",
        "description",
        "created_by",
    ]
    list_filter = ["kind"]
    search_fields = ["user__username", "request_id", "description"]
    date_hierarchy = "created_at"
    list_select_related = ["user", "created_by"]

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj):
        return format_money(obj.amount)

    @admin.display(description="balance after")
    def balance_after_display(self, obj):
        return format_money(obj.balance_after)


@admin.register(RedemptionCode)
class RedemptionCodeAdmin(admin.ModelAdmin):
    list_display = ["prefix", "amount_display", "batch", "status", "expires_at", "redeemed_by", "redeemed_at"]
    list_filter = ["status", "batch"]
    search_fields = ["prefix", "batch"]
    exclude = ["code_hash"]
    readonly_fields = ["prefix", "redeemed_by", "redeemed_at", "created_by", "created_at"]

    def has_add_permission(self, request):
        return False  # codes are generated in batches, shown once

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj):
        return format_money(obj.amount)


@admin.register(DailyUsage)
class DailyUsageAdmin(ReadOnlyAdmin):
    list_display = [
        "day",
        "user",
        "api_key",
        "model",
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "cost_display",
    ]
    list_filter = ["model"]
    date_hierarchy = "day"

    @admin.display(description="cost", ordering="cost")
    def cost_display(self, obj):
        return format_money(obj.cost)
