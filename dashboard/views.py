"""The user dashboard: server-rendered pages over the same selectors and services as the API.

Every page shows the logged-in user's own data only: objects named in a URL are looked up
together with their owner, so another user's id is a 404. Pages that show a new plain key
are never cached.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login, logout
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView, LogoutView
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from accounts import services as account_services
from accounts.apis import RegisterThrottle
from accounts.selectors import user_can_authenticate
from billing import selectors as billing_selectors
from billing.services import RedemptionError, redemption_redeem
from core.money import format_money
from keys import services as key_services
from keys.selectors import api_key_get, api_key_list

from .charts import bar_chart
from .forms import KeyCreateForm, LoginForm, RedeemForm, RegenerateForm, SignupForm, UsageFilterForm

PAGE_SIZE = 25


def active_required(view):
    """Logged in with an active account; a suspended or deleted account is logged out."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not user_can_authenticate(request.user):
            logout(request)
            messages.error(request, "Your account is not active.")
            return redirect("dashboard:login")
        return view(request, *args, **kwargs)

    return login_required(wrapper)


class DashboardLoginView(LoginView):
    template_name = "dashboard/login.html"
    form_class = LoginForm
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "allow_registration": settings.ALLOW_REGISTRATION}

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.throttled:
            response.status_code = 429
        return response


class DashboardLogoutView(LogoutView):
    next_page = reverse_lazy("dashboard:login")


class _SignupScope:
    throttle_scope = "register"  # one budget of sign-ups per client IP, shared with the API


@never_cache
def signup(request):
    """Create an account (when ALLOW_REGISTRATION is on) and log in to it."""
    if not settings.ALLOW_REGISTRATION:
        raise Http404("Registration is closed.")
    if request.user.is_authenticated:
        return redirect("dashboard:home")
    form = SignupForm(request.POST or None)
    if request.method != "POST" or not form.is_valid():
        return render(request, "dashboard/signup.html", {"form": form}, status=400 if form.is_bound else 200)
    if not RegisterThrottle().allow_request(request, _SignupScope()):
        form.add_error(None, "Too many sign-ups from your address. Try again later.")
        return render(request, "dashboard/signup.html", {"form": form}, status=429)
    data = form.cleaned_data
    try:
        user = account_services.user_sign_up(
            username=data["username"], email=data["email"], password=data["password1"]
        )
    except ValidationError as exc:
        for field, errors in exc.message_dict.items():
            field = {"password": "password1"}.get(field, field)
            form.add_error(field if field in form.fields else None, errors)
        return render(request, "dashboard/signup.html", {"form": form}, status=400)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    messages.success(request, f"Welcome, {user.username}. Create an API key to start.")
    return redirect("dashboard:keys")


def _page(request, queryset, size: int = PAGE_SIZE):
    return Paginator(queryset, size).get_page(request.GET.get("page"))


@active_required
def home(request):
    user = request.user
    context = {
        "balance": billing_selectors.balance_of(user=user),
        "quotas": billing_selectors.quota_status_of_account(user=user),
        "active_keys": api_key_list(user=user, filters={"status": "active"}).count(),
        "recent_ledger": billing_selectors.ledger_list(user=user)[:5],
    }
    return render(request, "dashboard/home.html", context)


def _keys_page(request, *, form=None, new_key=None, status: int = 200):
    context = {
        "keys": _page(request, api_key_list(user=request.user)),
        "form": form or KeyCreateForm(),
        "regenerate_form": RegenerateForm(),
        "new_key": new_key,
    }
    return render(request, "dashboard/keys.html", context, status=status)


@never_cache
@active_required
def keys(request):
    if request.method != "POST":
        return _keys_page(request)
    form = KeyCreateForm(request.POST)
    if not form.is_valid():
        return _keys_page(request, form=form, status=400)
    data = form.cleaned_data
    expires_at = timezone.now() + timedelta(days=data["expires_in"]) if data["expires_in"] else None
    try:
        issued = key_services.api_key_create(
            user=request.user,
            name=data["name"],
            expires_at=expires_at,
            allowed_models=data["allowed_models"],
            budget=data["budget"],
        )
    except ValidationError as exc:
        form.add_error(None, exc)
        return _keys_page(request, form=form, status=400)
    return _keys_page(request, new_key=issued, status=201)


def _own_key(request, key_id: int):
    key = api_key_get(key_id=key_id, user=request.user)
    if key is None:
        raise Http404("No such API key.")
    return key


@require_POST
@active_required
def key_revoke(request, key_id: int):
    key = key_services.api_key_revoke(key=_own_key(request, key_id))
    messages.success(request, f"Key {key.prefix}… is revoked; it stopped working at once.")
    return redirect("dashboard:keys")


@never_cache
@require_POST
@active_required
def key_regenerate(request, key_id: int):
    key = _own_key(request, key_id)
    form = RegenerateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose how long the old key keeps working.")
        return redirect("dashboard:keys")
    try:
        grace = timedelta(seconds=form.cleaned_data["grace"])
        issued = key_services.api_key_regenerate(key=key, grace=grace)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("dashboard:keys")
    key.refresh_from_db()
    messages.success(
        request,
        f"Key {key.prefix}… was replaced by {issued.key.prefix}…; the old key works until "
        f"{timezone.localtime(key.valid_until):%Y-%m-%d %H:%M %Z}.",
    )
    return _keys_page(request, new_key=issued, status=201)


@active_required
def usage(request):
    form = UsageFilterForm(request.GET or None, viewer=request.user)
    owner, period, metric, filters = request.user, "day", "requests", {}
    if form.is_valid():
        data = form.cleaned_data
        period, metric = data["period"] or period, data["metric"] or metric
        if form.staff and data["user"]:
            owner = None if data["user"] == "*" else get_user_model().objects.get(username=data["user"])
        filters = {"api_key": data["key"], "model": data["model"], "provider": data.get("provider")}
        filters = {name: value for name, value in filters.items() if value}
    series = billing_selectors.usage_series(period=period, user=owner, filters=filters)
    listed = dict(filters)
    if form.is_valid():
        data = form.cleaned_data
        listed["status"] = data["status"]
        if data["start"]:
            listed["start"] = timezone.make_aware(datetime.combine(data["start"], time.min))
        if data["end"]:
            listed["end"] = timezone.make_aware(datetime.combine(data["end"] + timedelta(days=1), time.min))
    context = {
        "form": form,
        "chart": bar_chart(series, metric=metric, period=period),
        "series": series,
        "period": period,
        "everyone": owner is None,
        "logs": _page(request, billing_selectors.usage_log_list(user=owner, filters=listed), 50),
    }
    return render(request, "dashboard/usage.html", context)


@active_required
def billing(request):
    form = RedeemForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            record = redemption_redeem(user=request.user, code=form.cleaned_data["code"])
        except RedemptionError as exc:
            form.add_error("code", str(exc))
        else:
            amount, balance = format_money(record.amount), format_money(record.balance_after)
            messages.success(request, f"Redeemed {amount}; your balance is now {balance}.")
            return redirect("dashboard:billing")
    context = {
        "form": form,
        "balance": billing_selectors.balance_of(user=request.user),
        "ledger": _page(request, billing_selectors.ledger_list(user=request.user), 50),
    }
    return render(request, "dashboard/billing.html", context, status=400 if form.errors else 200)


@active_required
def models(request):
    return render(
        request, "dashboard/models.html", {"catalog": billing_selectors.model_catalog_for(user=request.user)}
    )


# --- Midjourney tasks -----------------------------------------------------------------


@active_required
def mj_tasks(request):
    from jobs.selectors import midjourney_tasks_of_user
    from jobs.wire import image_link, thumbnail_url

    status = request.GET.get("status", "")
    page = _page(request, midjourney_tasks_of_user(user_id=request.user.pk, status=status), 24)
    for task in page:
        task.thumbnail, task.link = thumbnail_url(task), image_link(task)
    context = {"tasks": page, "status": status, "statuses": MJ_STATUSES}
    return render(request, "dashboard/mj_tasks.html", context)


MJ_STATUSES = ("SUBMITTED", "IN_PROGRESS", "MODAL", "SUCCESS", "FAILURE", "CANCEL")


@active_required
def mj_image(request, task_id: str):
    """A task's image through the gateway (MJ_IMAGE_PROXY on): the user's own tasks, or
    any task for staff (the operator console's thumbnails)."""
    from asgiref.sync import async_to_sync
    from django.conf import settings
    from django.http import Http404, HttpResponse

    from jobs import images, selectors

    if not settings.MJ_IMAGE_PROXY:
        raise Http404("The image proxy is off.")
    task = selectors.midjourney_task_for_viewer(user=request.user, task_id=task_id)
    if task is None or not task.image_url:
        raise Http404("No such image.")
    base_url = selectors.midjourney_provider_base_url(provider_id=task.provider_id)
    try:
        image = async_to_sync(images.midjourney_image_fetch)(
            image_url=task.image_url, provider_base_url=base_url, task_id=task.task_id
        )
    except images.ImageUnavailable as exc:
        return HttpResponse(exc.message, status=502, content_type="text/plain; charset=utf-8")
    response = HttpResponse(image.body, content_type=image.content_type)
    response["Cache-Control"] = "private, max-age=86400"
    return response
