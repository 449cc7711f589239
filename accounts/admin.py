from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from billing.models import BillingRecord
from core.fields import MoneyFormField
from core.money import format_money

from . import services
from .models import PriceGroup, User


class BalanceAdjustmentForm(forms.Form):
    amount = MoneyFormField(help_text="Positive adds credit, negative deducts. Up to 9 decimal places.")
    kind = forms.ChoiceField(
        choices=[
            (BillingRecord.Kind.TOPUP, "Top-up"),
            (BillingRecord.Kind.ADJUSTMENT, "Adjustment"),
            (BillingRecord.Kind.REFUND, "Refund"),
        ],
        initial=BillingRecord.Kind.ADJUSTMENT,
    )
    description = forms.CharField(max_length=255, required=False)


@admin.register(PriceGroup)
class PriceGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "multiplier", "description", "created_at"]
    search_fields = ["name"]


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ["username", "email", "status", "balance_display", "credit_display", "group", "is_staff"]
    list_filter = ["status", "is_staff", "group"]
    search_fields = ["username", "email", "full_name"]
    filter_horizontal = []
    readonly_fields = ["balance_display", "adjust_balance_link", "last_login", "date_joined"]
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Profile", {"fields": ("full_name", "email", "status", "group")}),
        ("Money", {"fields": ("balance_display", "credit_limit", "adjust_balance_link")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "email", "password1", "password2")}),
    )

    @admin.display(description="balance", ordering="balance")
    def balance_display(self, obj):
        return format_money(obj.balance)

    @admin.display(description="credit limit", ordering="credit_limit")
    def credit_display(self, obj):
        return format_money(obj.credit_limit)

    @admin.display(description="adjust balance")
    def adjust_balance_link(self, obj):
        if not obj.pk:
            return "-"
        url = reverse("admin:accounts_user_adjust_balance", args=[obj.pk])
        ledger = reverse("admin:billing_billingrecord_changelist") + f"?user__id__exact={obj.pk}"
        logs = reverse("admin:billing_usagelog_changelist") + f"?user__id__exact={obj.pk}"
        new_key = reverse("admin:keys_apikey_add") + f"?user={obj.pk}"
        return format_html(
            '<a class="button" href="{}">Adjust balance (writes a ledger row)</a> '
            '<a class="button" href="{}">Create an API key</a> '
            '<a href="{}">Ledger</a> · <a href="{}">Usage logs</a>',
            url,
            new_key,
            ledger,
            logs,
        )

    def get_urls(self):
        custom = [
            path(
                "<int:user_id>/adjust-balance/",
                self.admin_site.admin_view(self.adjust_balance_view),
                name="accounts_user_adjust_balance",
            )
        ]
        return custom + super().get_urls()

    def adjust_balance_view(self, request, user_id: int):
        user = get_object_or_404(User, pk=user_id)
        if not self.has_change_permission(request, user):
            return redirect("admin:index")
        form = BalanceAdjustmentForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            if form.cleaned_data["amount"] == 0:
                form.add_error("amount", "The amount must not be zero.")
            else:
                record = services.user_adjust_balance(
                    user=user,
                    amount=form.cleaned_data["amount"],
                    kind=form.cleaned_data["kind"],
                    description=form.cleaned_data["description"],
                    created_by=request.user,
                )
                self.message_user(
                    request,
                    f"Balance of {user.username} changed by {format_money(record.amount)}; "
                    f"now {format_money(record.balance_after)}.",
                    messages.SUCCESS,
                )
                return redirect("admin:accounts_user_change", user.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Adjust the balance of {user.username}",
            "form": form,
            "target_user": user,
            "balance": format_money(user.balance),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/accounts/adjust_balance.html", context)
