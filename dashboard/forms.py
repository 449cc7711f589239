"""Forms of the user dashboard. They validate input; writes go through services."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from accounts.selectors import user_can_authenticate
from core.api import LoginLimiter
from core.fields import MoneyFormField


class LoginForm(AuthenticationForm):
    """Django's login form, plus the API's failed-login limits and account status check.
    Unknown user, wrong password and inactive account all get the same message."""

    throttled = False

    def clean(self):
        username = self.data.get("username", "")
        attempt = LoginLimiter.begin(self.request.META, username)
        if attempt.wait is not None:
            self.throttled = True
            raise ValidationError(
                f"Too many failed logins. Try again in {int(attempt.wait) + 1} seconds.", code="throttled"
            )
        cleaned = super().clean()
        attempt.succeeded()
        return cleaned

    def confirm_login_allowed(self, user):
        if not user_can_authenticate(user):
            raise self.get_invalid_login_error()


class SignupForm(forms.Form):
    """A new account; the checks (free username, Django's password validators) are those of
    ``accounts.services.user_register``, as on POST /auth/register."""

    username = forms.CharField(max_length=150, help_text="Letters, digits and @ . + - _ only.")
    email = forms.EmailField(
        required=False, max_length=254, help_text="Optional; for password resets by an operator."
    )
    password1 = forms.CharField(
        label="Password",
        strip=False,
        max_length=4096,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="At least 8 characters, not all digits, not a common password.",
    )
    password2 = forms.CharField(
        label="Password again",
        strip=False,
        max_length=4096,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean(self):
        cleaned = super().clean()
        if (
            cleaned.get("password1")
            and cleaned.get("password2")
            and cleaned["password1"] != cleaned["password2"]
        ):
            self.add_error("password2", "The two passwords differ.")
        return cleaned


EXPIRY_CHOICES = [
    ("", "Never"),
    ("7", "In 7 days"),
    ("30", "In 30 days"),
    ("90", "In 90 days"),
    ("365", "In a year"),
]
GRACE_CHOICES = [
    ("0", "Stop the old key now"),
    ("3600", "Keep the old key for 1 hour"),
    ("86400", "Keep the old key for 1 day"),
    ("604800", "Keep the old key for 7 days"),
]


class KeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, help_text="Something to tell your keys apart.")
    expires_in = forms.TypedChoiceField(
        choices=EXPIRY_CHOICES, required=False, coerce=int, empty_value=None, label="Expires"
    )
    allowed_models = forms.CharField(
        max_length=2000,
        required=False,
        label="Allowed models",
        help_text="Comma-separated model names; empty allows every model.",
    )
    budget = MoneyFormField(required=False, help_text="Most this key may spend, e.g. 5.00; empty: no cap.")

    def clean_allowed_models(self):
        value = self.cleaned_data["allowed_models"]
        return [slug.strip() for slug in value.split(",") if slug.strip()]

    def clean_budget(self):
        budget = self.cleaned_data["budget"]
        if budget is not None and budget < 0:
            raise ValidationError("The budget cannot be negative.")
        return budget


class RegenerateForm(forms.Form):
    grace = forms.TypedChoiceField(choices=GRACE_CHOICES, coerce=int, initial="3600", label="Old key")


class RedeemForm(forms.Form):
    code = forms.CharField(max_length=200, label="Redemption code")


class UsageFilterForm(forms.Form):
    """The Usage page: the chart's period and measure, and filters shared by the chart and
    the request list (dates and status filter the list only). Staff also choose the user
    (a username, or * for everyone) and the provider."""

    period = forms.ChoiceField(
        required=False, choices=[("day", "Per day"), ("hour", "Per hour")], label="Chart"
    )
    metric = forms.ChoiceField(
        required=False,
        choices=[("requests", "Requests"), ("tokens", "Tokens"), ("cost", "Cost")],
        label="Show",
    )
    user = forms.CharField(required=False, max_length=150, help_text="A username, or * for every user.")
    key = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, label="API key")
    model = forms.CharField(required=False, max_length=200)
    provider = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    start = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))
    status = forms.ChoiceField(
        required=False, choices=[("", "Any"), ("success", "Succeeded"), ("error", "Failed")]
    )

    def __init__(self, data=None, *, viewer, **kwargs):
        from django.contrib.auth import get_user_model

        from keys.selectors import api_key_list
        from providers.selectors import provider_list

        super().__init__(data, **kwargs)
        self.staff = bool(viewer.is_staff)
        owner = viewer
        if self.staff:
            self.fields["provider"].choices = [("", "Any")] + [(p.pk, p.name) for p in provider_list()]
            named = (data or {}).get("user", "").strip()
            if named and named != "*":
                owner = get_user_model().objects.filter(username=named).first() or viewer
        else:
            del self.fields["user"]
            del self.fields["provider"]
        keys = api_key_list(user=owner) if owner is not None else []
        self.fields["key"].choices = [("", "Any")] + [
            (k.pk, f"{k.name or 'key'} ({k.prefix}…)") for k in keys
        ]

    def clean_user(self):
        name = self.cleaned_data["user"].strip()
        if name and name != "*":
            from django.contrib.auth import get_user_model

            if not get_user_model().objects.filter(username=name).exists():
                raise ValidationError("No user has this username.")
        return name
