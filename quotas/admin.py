from django import forms
from django.contrib import admin

from .amounts import limit_display, limit_input, limit_parse
from .models import Quota, QuotaUsage


class QuotaForm(forms.ModelForm):
    """The limit as a person types it: an amount ("5.00") for cost, a count otherwise."""

    limit = forms.CharField(
        max_length=40, help_text="Cost: an amount such as 5.00. Requests or tokens: a whole number."
    )

    class Meta:
        model = Quota
        fields = "__all__"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and not self.is_bound:
            self.initial["limit"] = limit_input(metric=self.instance.metric, value=self.instance.limit)

    def clean(self):
        cleaned = super().clean()
        text, metric = cleaned.get("limit"), cleaned.get("metric")
        if text is not None and metric:
            try:
                cleaned["limit"] = limit_parse(metric=metric, text=text)
            except forms.ValidationError as exc:
                self.add_error("limit", exc)
        return cleaned


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    form = QuotaForm
    list_display = ["id", "api_key", "user", "metric", "period", "limit_display", "reset_time", "status"]
    list_filter = ["metric", "period", "status"]
    search_fields = ["api_key__prefix", "user__username"]
    raw_id_fields = ["api_key", "user"]

    @admin.display(description="limit", ordering="limit")
    def limit_display(self, obj):
        return limit_display(metric=obj.metric, value=obj.limit)


@admin.register(QuotaUsage)
class QuotaUsageAdmin(admin.ModelAdmin):
    list_display = ["quota", "period_start", "period_end", "used_display", "updated_at"]
    date_hierarchy = "period_start"
    raw_id_fields = ["quota"]
    list_select_related = ["quota"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="used", ordering="used")
    def used_display(self, obj):
        return limit_display(metric=obj.quota.metric, value=obj.used)
