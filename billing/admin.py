import csv

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from core.admin import MoneyAdminMixin
from core.fields import MoneyFormField
from core.money import decimal_str, format_money, format_price
from providers.models import Model

from . import reports, selectors, services
from .models import BillingRecord, DailyUsage, ModelPrice, RedemptionCode, UsageLog


class ReadOnlyAdmin(MoneyAdminMixin, admin.ModelAdmin):
    """Logs and the ledger are written by services only. Their pages show amounts as money."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


PRICE_AMOUNTS = ("input_per_1m", "output_per_1m", "cached_input_per_1m", "per_request")
BULK_ROWS = 200  # models in one bulk-editor page (narrow it with ?q=)


class ModelPriceForm(forms.ModelForm):
    """Amounts in currency ("0.15"); "Effective from" empty means now."""

    class Meta:
        model = ModelPrice
        fields = "__all__"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "effective_from" in self.fields:
            self.fields["effective_from"].required = False
            self.fields["effective_from"].help_text = "Empty: now. A later time schedules the change."
            if self.instance.pk is None:
                self.fields["effective_from"].initial = timezone.now().replace(second=0, microsecond=0)
        for name in PRICE_AMOUNTS:
            if name in self.fields:
                self.fields[name].help_text += " In currency, e.g. 0.15."

    def clean(self):
        cleaned = super().clean()
        for name in PRICE_AMOUNTS:
            if (cleaned.get(name) or 0) < 0:
                self.add_error(name, "A price cannot be negative.")
        price = self.instance
        ended = price.effective_until is not None and price.effective_until <= timezone.now()
        amounts_changed = set(PRICE_AMOUNTS) & set(self.changed_data)
        if ended and amounts_changed and selectors.model_price_billed(price=price):
            raise forms.ValidationError(
                "This version has ended and requests were billed with it: add a new price instead."
            )
        return cleaned


class BulkPriceForm(forms.Form):
    """One model's row in the bulk price editor: amounts in currency, as on a price."""

    model = forms.IntegerField(widget=forms.HiddenInput)
    input_per_1m = MoneyFormField(label="input per 1M")
    output_per_1m = MoneyFormField(label="output per 1M")
    cached_input_per_1m = MoneyFormField(label="cached input per 1M")
    per_request = MoneyFormField(label="per request")

    def clean(self):
        cleaned = super().clean()
        for name in PRICE_AMOUNTS:
            if (cleaned.get(name) or 0) < 0:
                self.add_error(name, "A price cannot be negative.")
        return cleaned


BulkPriceFormSet = forms.formset_factory(BulkPriceForm, extra=0)


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """Prices are versions. One that billed requests is history: changing its amounts
    publishes a new version effective from now (``billing.services.model_price_create``) and
    ends this one; only its end and note change in place (``model_price_update``)."""

    form = ModelPriceForm
    list_display = [
        "model",
        "input_display",
        "output_display",
        "cached_input_display",
        "per_request_display",
        "effective_from",
        "effective_until",
        "note",
    ]
    list_filter = ["currency"]
    search_fields = ["model__slug", "note"]
    date_hierarchy = "effective_from"
    autocomplete_fields = ["model"]

    @admin.display(description="input", ordering="input_per_1m")
    def input_display(self, obj):
        return format_price(obj.input_per_1m)

    @admin.display(description="output", ordering="output_per_1m")
    def output_display(self, obj):
        return format_price(obj.output_per_1m)

    @admin.display(description="cached input", ordering="cached_input_per_1m")
    def cached_input_display(self, obj):
        return format_price(obj.cached_input_per_1m)

    @admin.display(description="per request", ordering="per_request")
    def per_request_display(self, obj):
        return format_price(obj.per_request, unit="request")

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and selectors.model_price_billed(price=obj):
            return ["model", "currency", "effective_from"]
        return []

    def get_deleted_objects(self, objs, request):
        """A version that billed requests is history: the delete pages list it as protected
        and delete nothing (end it with Effective until instead)."""
        deletable, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        billed = [price for price in objs if selectors.model_price_billed(price=price)]
        protected = [
            *protected,
            *(f"{price}: requests were billed with it; end it (Effective until) instead" for price in billed),
        ]
        return deletable, counts, perms_needed, protected

    def delete_model(self, request, obj):
        services.model_price_delete(price=obj)

    def get_urls(self):
        bulk = path("bulk/", self.admin_site.admin_view(self.bulk_view), name="billing_modelprice_bulk")
        return [bulk, *super().get_urls()]

    def bulk_view(self, request):
        """Every model's price in force, editable in one table: the rows whose amounts
        changed get a new version effective now (``model_prices_set``), the rest stay."""
        if not self.has_change_permission(request) or not self.has_add_permission(request):
            raise PermissionDenied
        query = request.GET.get("q", "").strip()
        models = Model.objects.exclude(status=Model.Status.DISABLED).order_by("slug")
        if query:
            models = models.filter(slug__icontains=query)
        models = list(models[:BULK_ROWS])
        current = selectors.prices_in_force(model_ids=[model.pk for model in models])
        initial = [
            {"model": model.pk, **{name: getattr(current.get(model.pk), name, 0) for name in PRICE_AMOUNTS}}
            for model in models
        ]
        formset = BulkPriceFormSet(request.POST or None, initial=initial)
        if request.method == "POST" and formset.is_valid():
            by_pk = {model.pk: model for model in models}
            changes = {
                by_pk[form.cleaned_data["model"]]: {name: form.cleaned_data[name] for name in PRICE_AMOUNTS}
                for form in formset.forms
                if form.has_changed() and form.cleaned_data.get("model") in by_pk
            }
            if changes:
                note = f"bulk edit by {request.user.username}"
                services.model_prices_set(amounts_by_model=changes, note=note)
            names = ", ".join(sorted(model.slug for model in changes)) or "none"
            self.message_user(request, f"New prices effective now for {len(changes)} model(s): {names}.")
            return HttpResponseRedirect(request.get_full_path())
        slugs = {model.pk: model.slug for model in models}
        rows = [(slugs[form.initial["model"]], current.get(form.initial["model"]), form) for form in formset]
        context = {
            **self.admin_site.each_context(request),
            "title": "Edit prices in bulk",
            "opts": self.model._meta,
            "formset": formset,
            "rows": rows,
            "query": query,
            "limit": BULK_ROWS,
        }
        return TemplateResponse(request, "admin/billing/modelprice/bulk.html", context)

    def delete_queryset(self, request, queryset):
        for price in queryset:
            services.model_price_delete(price=price)

    def save_model(self, request, obj, form, change):
        if not change:
            saved = services.model_price_create(
                model=obj.model,
                **{name: form.cleaned_data.get(name) or 0 for name in PRICE_AMOUNTS},
                currency=obj.currency,
                effective_from=form.cleaned_data.get("effective_from"),
                effective_until=obj.effective_until,
                note=obj.note,
            )
            for field in ModelPrice._meta.concrete_fields:
                setattr(obj, field.attname, getattr(saved, field.attname))
            return
        if not selectors.model_price_billed(price=obj):
            if obj.effective_from is None:
                obj.effective_from = timezone.now()
            super().save_model(request, obj, form, change)
            return
        amounts_changed = [name for name in PRICE_AMOUNTS if name in form.changed_data]
        changed = form.changed_data
        in_place = {name: getattr(obj, name) for name in services.PRICE_UPDATABLE if name in changed}
        if not amounts_changed:
            services.model_price_update(price=ModelPrice.objects.get(pk=obj.pk), data=in_place)
            return
        now = timezone.now()
        new = services.model_price_replace(
            price=ModelPrice.objects.get(pk=obj.pk),
            amounts={name: getattr(obj, name) for name in PRICE_AMOUNTS},
            effective_from=now,
            note=obj.note,
        )
        obj.refresh_from_db()
        self.message_user(
            request,
            f"Requests were billed with this price, so it was kept as history (ended {now:%Y-%m-%d %H:%M}) "
            f"and the new amounts were published as a new version effective now (#{new.pk}).",
            messages.WARNING,
        )


class _Echo:
    def write(self, value):
        return value


CSV_FIELDS = [
    "created_at", "request_id", "user_id", "api_key_id", "provider_id", "request_type", "endpoint",
    "model_requested", "model_upstream", "model_billed", "stream", "status_code", "prompt_tokens",
    "completion_tokens", "cached_tokens", "usage_estimated", "cost", "latency_ms", "ttft_ms", "client_ip",
    "error",
]  # fmt: skip


@admin.register(UsageLog)
class UsageLogAdmin(ReadOnlyAdmin):
    actions = ["export_csv"]
    # narrow columns, so model, cost and latency are in view at 1400 px without scrolling
    list_display = [
        "when",
        "user",
        "api_key",
        "model_column",
        "status",
        "tokens",
        "cost_display",
        "latency",
        "attempts",
    ]
    list_display_links = ["when"]
    list_filter = ["status_code", "request_type", "stream", "provider", "model_requested", "usage_estimated"]
    search_fields = ["request_id", "model_requested", "user__username", "api_key__prefix"]
    date_hierarchy = "created_at"
    list_select_related = ["user", "api_key", "provider"]
    readonly_fields = ["attempts_detail"]

    @admin.display(description="when", ordering="created_at")
    def when(self, obj):
        local = timezone.localtime(obj.created_at)
        return format_html(
            '<span title="{}" style="white-space:nowrap">{}</span>',
            obj.request_id,
            f"{local:%Y-%m-%d %H:%M:%S}",
        )

    @admin.display(description="status", ordering="status_code")
    def status(self, obj):
        return obj.status_code

    @admin.display(description="model", ordering="model_requested")
    def model_column(self, obj):
        billed = obj.model_billed or obj.model_requested
        if billed == obj.model_requested:
            return obj.model_requested
        return format_html("{}<br><small>billed as {}</small>", obj.model_requested, billed)

    @admin.display(description="tokens in / out")
    def tokens(self, obj):
        estimated = (
            format_html(' <small title="{}">est.</small>', "counted by the gateway")
            if obj.usage_estimated
            else ""
        )
        return format_html(
            '<span style="white-space:nowrap">{} / {}{}</span>',
            obj.prompt_tokens,
            obj.completion_tokens,
            estimated,
        )

    @admin.display(description="cost", ordering="cost")
    def cost_display(self, obj):
        return format_money(obj.cost)

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, obj):
        first = (
            format_html("<br><small>first byte {} ms</small>", obj.ttft_ms) if obj.ttft_ms is not None else ""
        )
        return format_html('<span style="white-space:nowrap">{} ms</span>{}', obj.latency_ms, first)

    @staticmethod
    def _attempt_items(obj) -> list[tuple[str, str, str, str]]:
        items = []
        for attempt in obj.providers_tried if isinstance(obj.providers_tried, list) else ():
            if not isinstance(attempt, dict):
                continue
            status = attempt.get("status")
            ok = isinstance(status, int) and status < 400
            name = attempt.get("name") or f"#{attempt.get('provider')}"
            items.append(
                (
                    "#2e7d32" if ok else "#c0392b",
                    f"{name}: {status if status is not None else '?'}",
                    f"{attempt.get('ms', '?')} ms",
                    str(attempt.get("error") or ""),
                )
            )
        return items

    @admin.display(description="provider attempts")
    def attempts(self, obj):
        items = self._attempt_items(obj)
        if not items:
            return "—" if obj.provider_id is None else str(obj.provider)
        return format_html(
            '<ol style="margin:0;padding-left:1.2em">{}</ol>',
            format_html_join(
                "",
                '<li style="list-style:decimal"><span style="color:{}">{}</span> · {}{}</li>',
                (
                    (
                        colour,
                        label,
                        ms,
                        format_html(' <small title="{}">error</small>', error) if error else "",
                    )
                    for colour, label, ms, error in items
                ),
            ),
        )

    @admin.display(description="provider attempts")
    def attempts_detail(self, obj):
        items = self._attempt_items(obj)
        if not items:
            return "none"
        return format_html(
            "<ol>{}</ol>",
            format_html_join(
                "",
                '<li><span style="color:{}">{}</span> after {}{}</li>',
                (
                    (colour, label, ms, format_html("<br><code>{}</code>", error) if error else "")
                    for colour, label, ms, error in items
                ),
            ),
        )

    def get_fields(self, request, obj=None):
        fields = [
            f for f in super().get_fields(request, obj) if f not in ("providers_tried", "attempts_detail")
        ]
        return [*fields, "attempts_detail"]

    @admin.action(description="Export selected as CSV (use 'select all' for the whole filtered list)")
    def export_csv(self, request, queryset):
        writer = csv.writer(_Echo())

        def rows():
            yield writer.writerow([*CSV_FIELDS, "cost_amount"])
            for log in queryset.order_by("created_at").values_list(*CSV_FIELDS).iterator(chunk_size=2000):
                cost = log[CSV_FIELDS.index("cost")]
                yield writer.writerow([*log, decimal_str(cost)])

        response = StreamingHttpResponse(rows(), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="usage-logs.csv"'
        return response

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        custom = [
            path("dashboard/", self.admin_site.admin_view(self.dashboard_view), name="billing_dashboard"),
        ]
        return custom + super().get_urls()

    def dashboard_view(self, request):
        days = 30
        data = reports.dashboard(days=days)
        context = {
            **self.admin_site.each_context(request),
            "title": "Usage dashboard",
            "opts": self.model._meta,
            "data": data,
            "charts": [
                _bar_chart("Spend per day", data["series"], "cost", money=True),
                _bar_chart("Requests per day", data["series"], "requests"),
                _bar_chart("Tokens per day", data["series"], "tokens"),
            ],
            "days": days,
        }
        return TemplateResponse(request, "admin/billing/dashboard.html", context)


def _bar_chart(title: str, series: list[dict], field: str, *, money: bool = False) -> dict:
    """An SVG bar chart rendered on the server: no JavaScript, no CDN."""
    values = [
        (row["prompt_tokens"] + row["completion_tokens"]) if field == "tokens" else row[field]
        for row in series
    ]
    peak = max(values) or 1
    width, height, gap = 720, 160, 2
    bar = width / max(len(values), 1)
    bars = []
    for index, (row, value) in enumerate(zip(series, values, strict=True)):
        bar_height = round(value / peak * (height - 20), 1)
        label = format_money(value) if money else f"{value:,}"
        bars.append(
            {
                "x": round(index * bar, 1),
                "y": round(height - bar_height, 1),
                "w": round(bar - gap, 1),
                "h": bar_height,
                "title": f"{row['day']:%Y-%m-%d}: {label}",
            }
        )
    total = sum(values)
    return {
        "title": title,
        "width": width,
        "height": height,
        "bars": bars,
        "total": format_money(total) if money else f"{total:,}",
        "peak": format_money(peak) if money else f"{peak:,}",
    }


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


class GenerateCodesForm(forms.Form):
    count = forms.IntegerField(min_value=1, max_value=10_000, initial=10)
    amount = MoneyFormField(help_text="Credit per code, e.g. 5.00")
    batch = forms.CharField(max_length=100, required=False)
    expires_at = forms.DateTimeField(required=False, help_text="YYYY-MM-DD HH:MM, empty: never")


@admin.register(RedemptionCode)
class RedemptionCodeAdmin(admin.ModelAdmin):
    actions = ["disable_codes"]
    change_list_template = "admin/billing/redemptioncode/change_list.html"

    def get_urls(self):
        custom = [
            path(
                "generate/",
                self.admin_site.admin_view(self.generate_view),
                name="billing_redemption_generate",
            )
        ]
        return custom + super().get_urls()

    def generate_view(self, request):
        form = GenerateCodesForm(request.POST or None)
        codes = None
        if request.method == "POST" and form.is_valid():
            if form.cleaned_data["amount"] <= 0:
                form.add_error("amount", "The amount must be positive.")
            else:
                codes = services.redemption_codes_generate(
                    count=form.cleaned_data["count"],
                    amount=form.cleaned_data["amount"],
                    batch=form.cleaned_data["batch"],
                    expires_at=form.cleaned_data["expires_at"],
                    created_by=request.user,
                )
                self.message_user(
                    request, f"Generated {len(codes)} code(s). They are shown once.", messages.SUCCESS
                )
        context = {
            **self.admin_site.each_context(request),
            "title": "Generate redemption codes",
            "opts": self.model._meta,
            "form": form,
            "codes": codes,
        }
        return TemplateResponse(request, "admin/billing/generate_codes.html", context)

    @admin.action(description="Disable selected unused codes")
    def disable_codes(self, request, queryset):
        changed = queryset.filter(status=RedemptionCode.Status.UNUSED).update(
            status=RedemptionCode.Status.DISABLED
        )
        self.message_user(request, f"Disabled {changed} code(s).", messages.SUCCESS)

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
