from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.timesince import timesince

from . import services
from .health import ModelListError, ProbeResult, provider_check, provider_upstream_models
from .models import Model, Provider, ProviderModel
from .selectors import HourActivity, provider_hourly_activity

SPARK_WIDTH, SPARK_HEIGHT, SPARK_BAR = 120, 28, 5  # 24 bars of 5 px


def sparkline(hours: list[HourActivity]) -> str:
    """An inline SVG of hourly activity, oldest hour first: grey bars for requests, red
    for errors (on the same scale), a blue line for mean latency (its own scale)."""
    if not hours:
        return ""
    peak = max(max(h.requests, h.errors) for h in hours) or 1
    slowest = max((h.latency_ms or 0) for h in hours) or 1
    bars, errors, points = [], [], []
    for index, hour in enumerate(hours):
        x = index * SPARK_BAR
        for count, into in ((hour.requests, bars), (hour.errors, errors)):
            if count:
                height = max(1.0, count / peak * (SPARK_HEIGHT - 2))
                into.append((x, f"{SPARK_HEIGHT - height:.1f}", SPARK_BAR - 1, f"{height:.1f}"))
        if hour.latency_ms is not None:
            y = SPARK_HEIGHT - 1 - hour.latency_ms / slowest * (SPARK_HEIGHT - 4)
            points.append(f"{x + SPARK_BAR / 2:.1f},{y:.1f}")
    total = sum(h.requests for h in hours)
    failed = sum(h.errors for h in hours)
    timed = [h for h in hours if h.latency_ms is not None]
    mean = sum(h.latency_ms * h.requests for h in timed) / max(1, sum(h.requests for h in timed))
    summary = f"last 24 h: {total} requests, {failed} errors" + (
        f", mean latency {mean:.0f} ms" if timed else ""
    )
    rect = '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>'
    line = '<polyline points="{}" fill="none" stroke="#2b6cb0" stroke-width="1.5"/>'
    return format_html(
        '<svg class="sparkline" width="{}" height="{}" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        '<title>{}</title><line x1="0" y1="{}" x2="{}" y2="{}" stroke="#ccc"/>{}{}{}</svg>',
        SPARK_WIDTH, SPARK_HEIGHT, SPARK_WIDTH, SPARK_HEIGHT, summary, summary,
        SPARK_HEIGHT - 0.5, SPARK_WIDTH, SPARK_HEIGHT - 0.5,
        format_html_join("", rect, ((*bar, "#9aa5b1") for bar in bars)),
        format_html_join("", rect, ((*bar, "#d9534f") for bar in errors)),
        format_html(line, " ".join(points)) if len(points) > 1 else "",
    )  # fmt: skip


def probe_message(provider: Provider, result: ProbeResult, was_auto_disabled: bool) -> tuple[int, str]:
    if result.ok:
        again = " Re-enabled: it had been disabled automatically." if was_auto_disabled else ""
        return messages.SUCCESS, f"{provider.name}: test passed in {result.ms} ms.{again}"
    status = f"HTTP {result.status}: " if result.status else ""
    still = " It stays disabled." if was_auto_disabled else ""
    return (
        messages.ERROR,
        f"{provider.name}: test failed after {result.ms} ms ({status}{result.error[:200]}).{still}",
    )


class ProviderChangeList(ChangeList):
    """The provider list, with each shown provider's last 24 hours read in one go."""

    def get_results(self, request):
        super().get_results(request)
        activity = provider_hourly_activity(provider_ids=[p.pk for p in self.result_list])
        for provider in self.result_list:
            provider.activity = activity[provider.pk]


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
        "status_badge",
        "health",
        "last_24_hours",
        "priority",
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
    actions = ["probe_providers", "enable_providers", "disable_providers"]

    def get_changelist(self, request, **kwargs):
        return ProviderChangeList

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/test/", view(self.test_view), name="providers_provider_test"),
            path(
                "<path:object_id>/models/", view(self.upstream_models_view), name="providers_provider_models"
            ),
            *super().get_urls(),
        ]

    @admin.display(boolean=True, description="key")
    def has_credentials(self, obj):
        return obj.has_credentials

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        if obj.status == Provider.Status.AUTO_DISABLED:
            return format_html(
                '<strong class="provider-auto-disabled" title="{}" style="color:#fff;background:#c0392b;'
                'padding:2px 6px;border-radius:3px;white-space:nowrap">Auto-disabled</strong>',
                obj.status_reason or "disabled automatically",
            )
        if obj.status == Provider.Status.DISABLED:
            return format_html('<span style="color:#777" title="{}">Disabled</span>', obj.status_reason)
        return "Enabled"

    @admin.display(description="health", ordering="last_health_check_at")
    def health(self, obj):
        return format_html("{}<br>{}", self._health(obj), self.test_button(obj))

    def _health(self, obj):
        colours = {Provider.Health.HEALTHY: "#2e7d32", Provider.Health.UNHEALTHY: "#c0392b"}
        colour = colours.get(obj.health_status, "#999")
        if obj.last_health_check_at is None:
            return format_html('<span style="color:{}">&#9679;</span> not probed yet', colour)
        since = timesince(obj.last_health_check_at, timezone.now()).split(",")[0]
        when = "just now" if since.startswith("0\xa0") or since.startswith("0 ") else f"{since} ago"
        if obj.health_status == Provider.Health.HEALTHY:
            latency = f" · {obj.response_time_ms} ms" if obj.response_time_ms is not None else ""
            return format_html(
                '<span style="white-space:nowrap"><span style="color:{}">&#9679;</span> OK{}</span> · '
                '<span title="{}" style="white-space:nowrap">{}</span>',
                colour, latency, obj.last_health_check_at.isoformat(timespec="seconds"), when,
            )  # fmt: skip
        error = obj.last_error or "failed"
        return format_html(
            '<span style="color:{}">&#9679;</span> Failed · '
            '<span title="{}" style="white-space:nowrap">{}</span>'
            '<br><small class="provider-last-error" title="{}" style="color:#c0392b;overflow-wrap:anywhere">'
            "{}</small>",
            colour, obj.last_health_check_at.isoformat(timespec="seconds"), when,
            error, error[:60] + ("…" if len(error) > 60 else ""),
        )  # fmt: skip

    @admin.display(description="last 24 h")
    def last_24_hours(self, obj):
        return sparkline(getattr(obj, "activity", []))

    def test_button(self, obj):
        # a button of the list's own form (it carries the CSRF token), posted to the test view
        return format_html(
            '<button type="submit" class="button provider-test" formaction="{}" formmethod="post" '
            'name="_test" value="{}" style="margin-top:4px;padding:2px 10px">Test</button>',
            reverse("admin:providers_provider_test", args=[obj.pk]),
            obj.pk,
        )

    def _check(self, request, provider: Provider) -> None:
        was_auto_disabled = provider.status == Provider.Status.AUTO_DISABLED
        result = provider_check(provider=provider)
        level, text = probe_message(provider, result, was_auto_disabled)
        self.message_user(request, text, level)

    def test_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        provider = get_object_or_404(Provider, pk=object_id)
        if not self.has_change_permission(request, provider):
            raise PermissionDenied
        self._check(request, provider)
        back = request.META.get("HTTP_REFERER", "")
        allowed = url_has_allowed_host_and_scheme(
            back, {request.get_host()}, require_https=request.is_secure()
        )
        return HttpResponseRedirect(back if allowed else reverse("admin:providers_provider_changelist"))

    def upstream_models_view(self, request, object_id):
        """The upstream's model list, to route some of them through this provider."""
        provider = get_object_or_404(Provider, pk=object_id)
        if not self.has_change_permission(request, provider):
            raise PermissionDenied
        if request.method == "POST":
            chosen = request.POST.getlist("model")
            try:
                added = services.routes_add_upstream_models(provider=provider, upstream_models=chosen)
            except ValidationError as exc:
                self.message_user(request, f"Nothing added: {'; '.join(exc.messages)}", messages.ERROR)
            else:
                names = ", ".join(route.model.slug for route in added) or "none (already routed)"
                self.message_user(
                    request,
                    f"Routed through {provider.name}: {names}. Models without a price cannot be billed: "
                    "set their prices before users call them.",
                    messages.SUCCESS,
                )
            return HttpResponseRedirect(reverse("admin:providers_provider_change", args=[provider.pk]))
        error, listed = "", []
        try:
            listed = provider_upstream_models(provider)
        except ModelListError as exc:
            error = str(exc)
        routed = set(provider.routes.values_list("model__slug", flat=True)) | set(
            provider.routes.exclude(upstream_model="").values_list("upstream_model", flat=True)
        )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Models of {provider.name} upstream",
            "opts": self.opts,
            "original": provider,
            "error": error,
            "models": [(model, model.id in routed) for model in listed],
        }
        return TemplateResponse(request, "admin/providers/provider/upstream_models.html", context)

    @admin.action(description="Enable selected providers")
    def enable_providers(self, request, queryset):
        for provider in queryset:
            services.provider_set_status(provider=provider, status=Provider.Status.ENABLED, reason="")
        self.message_user(request, f"Enabled {queryset.count()} provider(s).", messages.SUCCESS)

    @admin.action(description="Test selected providers now (re-enables auto-disabled ones that pass)")
    def probe_providers(self, request, queryset):
        for provider in queryset:
            self._check(request, provider)

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
