from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import ForeignKeyRawIdWidget
from django.core.exceptions import PermissionDenied, ValidationError
from django.template.response import TemplateResponse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache

from accounts.models import User
from core.fields import MoneyFormField
from core.money import format_money

from . import services
from .models import APIKey


class KeyCreateForm(forms.Form):
    """What an operator sets on a new key for a user; ``api_key_create`` does the rest."""

    user = forms.ModelChoiceField(queryset=User.objects.filter(is_active=True), help_text="The key's owner.")
    name = forms.CharField(max_length=100, required=False)
    expires_at = forms.DateTimeField(required=False, help_text="YYYY-MM-DD HH:MM; empty: never.")
    allowed_models = forms.CharField(
        max_length=2000, required=False, help_text="Comma-separated model names; empty: every model."
    )
    budget = MoneyFormField(required=False, help_text="Most this key may spend, e.g. 5.00; empty: no cap.")
    rpm_limit = forms.IntegerField(min_value=1, required=False, label="Requests per minute")
    tpm_limit = forms.IntegerField(min_value=1, required=False, label="Tokens per minute")
    concurrency_limit = forms.IntegerField(min_value=1, required=False, label="Requests at a time")
    web_search = forms.BooleanField(
        required=False,
        label="Web search by default",
        help_text='Requests that do not say "web_search" get the gateway\'s web search.',
    )

    def __init__(self, *args, admin_site, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["user"].widget = ForeignKeyRawIdWidget(
            APIKey._meta.get_field("user").remote_field, admin_site
        )

    def clean_allowed_models(self):
        return [slug.strip() for slug in self.cleaned_data["allowed_models"].split(",") if slug.strip()]

    def clean_budget(self):
        budget = self.cleaned_data["budget"]
        if budget is not None and budget < 0:
            raise ValidationError("The budget cannot be negative.")
        return budget


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    """Keys are inspected, limited and revoked here; "Add" creates one for a user through
    ``api_key_create`` and shows the plain key once, on a page that is never cached (only the
    hash is stored: it cannot be shown again). The hash is never displayed."""

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

    @method_decorator(never_cache)
    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = KeyCreateForm(
            request.POST or None, initial={"user": request.GET.get("user")}, admin_site=self.admin_site
        )
        issued = None
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                issued = services.api_key_create(**data)
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                self.log_addition(request, issued.key, [{"added": {}}])
        context = {
            **self.admin_site.each_context(request),
            "title": f"API key created for {issued.key.user.username}" if issued else "Create an API key",
            "opts": self.model._meta,
            "form": form,
            "issued": issued,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/keys/apikey/create.html", context)

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
