from django import forms
from django.contrib import admin, messages

from . import services
from .models import Model, Provider, ProviderModel


class ProviderForm(forms.ModelForm):
    api_key = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Write-only. Leave empty to keep the stored credentials.",
    )

    class Meta:
        model = Provider
        fields = "__all__"

    def save(self, commit=True):
        provider = super().save(commit=False)
        if self.cleaned_data.get("api_key"):
            services.provider_set_credentials(provider=provider, api_key=self.cleaned_data["api_key"])
        if commit:
            provider.save()
        return provider


class RouteInline(admin.TabularInline):
    model = ProviderModel
    extra = 0
    fields = ["model", "upstream_model", "enabled", "priority", "weight", "bill_upstream_model"]
    raw_id_fields = ["model"]


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = [
        "name",
        "type",
        "base_url",
        "status",
        "priority",
        "weight",
        "responses_api",
        "health_status",
        "response_time_ms",
        "has_credentials",
    ]
    list_filter = ["status", "type", "health_status", "responses_api"]
    search_fields = ["name", "base_url"]
    readonly_fields = [
        "status_reason",
        "status_changed_at",
        "health_status",
        "last_health_check_at",
        "last_error",
        "response_time_ms",
        "has_credentials",
        "created_at",
        "updated_at",
    ]
    inlines = [RouteInline]
    actions = ["enable_providers", "disable_providers", "probe_providers"]

    @admin.display(boolean=True, description="credentials set")
    def has_credentials(self, obj):
        return obj.has_credentials

    @admin.action(description="Enable selected providers")
    def enable_providers(self, request, queryset):
        for provider in queryset:
            services.provider_set_status(provider=provider, status=Provider.Status.ENABLED, reason="")
        self.message_user(request, f"Enabled {queryset.count()} provider(s).", messages.SUCCESS)

    @admin.action(description="Probe selected providers now")
    def probe_providers(self, request, queryset):
        from .health import provider_check

        for provider in queryset:
            result = provider_check(provider=provider)
            level = messages.SUCCESS if result.ok else messages.ERROR
            detail = "ok" if result.ok else f"failed: {result.error[:200]}"
            self.message_user(request, f"{provider.name}: {detail} ({result.ms} ms)", level)

    @admin.action(description="Disable selected providers")
    def disable_providers(self, request, queryset):
        for provider in queryset:
            services.provider_set_status(
                provider=provider,
                status=Provider.Status.DISABLED,
                reason=f"disabled by {request.user.username}",
            )
        self.message_user(request, f"Disabled {queryset.count()} provider(s).", messages.SUCCESS)


@admin.register(Model)
class ModelAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "display_name",
        "type",
        "status",
        "context_length",
        "supports_tools",
        "routing_strategy",
    ]
    list_filter = ["type", "status", "supports_tools", "supports_vision"]
    search_fields = ["slug", "display_name"]


@admin.register(ProviderModel)
class ProviderModelAdmin(admin.ModelAdmin):
    list_display = [
        "model",
        "provider",
        "upstream_model",
        "enabled",
        "priority",
        "weight",
        "bill_upstream_model",
    ]
    list_filter = ["enabled", "provider"]
    search_fields = ["model__slug", "provider__name", "upstream_model"]
    raw_id_fields = ["model", "provider"]
