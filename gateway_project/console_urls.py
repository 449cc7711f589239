"""The management API, the admin, the API docs and the console: loaded by the first request
that reaches them (gateway_project.urls), not by a worker that only relays and answers probes."""

from django.contrib import admin
from django.urls import include, path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from accounts import apis as accounts_apis
from billing import apis as billing_apis
from keys import apis as keys_apis
from providers import apis as providers_apis
from quotas import apis as quotas_apis

admin.site.site_header = "AI gateway operator console"
admin.site.site_title = "AI gateway"
admin.site.index_title = "Operations"


class IdConverter:
    """A primary key in a URL: at most 18 digits, so it always fits a 64-bit column
    (a longer number is a 404, not a database error)."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "id")

# Self-service: the logged-in user's own data only.
me_patterns = [
    path("keys/", keys_apis.MyKeyListApi.as_view(), name="keys"),
    path("keys/<id:key_id>/", keys_apis.MyKeyDetailApi.as_view(), name="key"),
    path("keys/<id:key_id>/revoke/", keys_apis.MyKeyRevokeApi.as_view(), name="key-revoke"),
    path("keys/<id:key_id>/regenerate/", keys_apis.MyKeyRegenerateApi.as_view(), name="key-regenerate"),
    path("usage/", billing_apis.MyUsageApi.as_view(), name="usage"),
    path("usage/daily/", billing_apis.MyDailyUsageApi.as_view(), name="usage-daily"),
    path("ledger/", billing_apis.MyLedgerApi.as_view(), name="ledger"),
    path("balance/", billing_apis.MyBalanceApi.as_view(), name="balance"),
    path("quotas/", quotas_apis.MyQuotasApi.as_view(), name="quotas"),
    path("models/", billing_apis.MyModelsApi.as_view(), name="models"),
    path("redeem/", billing_apis.MyRedeemApi.as_view(), name="redeem"),
]

# Staff only.
admin_patterns = [
    path("users/", accounts_apis.AdminUserListApi.as_view(), name="users"),
    path("users/<id:user_id>/", accounts_apis.AdminUserDetailApi.as_view(), name="user"),
    path("users/<id:user_id>/suspend/", accounts_apis.AdminUserSuspendApi.as_view(), name="user-suspend"),
    path("users/<id:user_id>/activate/", accounts_apis.AdminUserActivateApi.as_view(), name="user-activate"),
    path(
        "users/<id:user_id>/balance-adjustments/",
        accounts_apis.AdminBalanceAdjustmentApi.as_view(),
        name="user-balance-adjustments",
    ),
    path("keys/", keys_apis.AdminKeyListApi.as_view(), name="keys"),
    path("keys/<id:key_id>/", keys_apis.AdminKeyDetailApi.as_view(), name="key"),
    path("keys/<id:key_id>/revoke/", keys_apis.AdminKeyRevokeApi.as_view(), name="key-revoke"),
    path("keys/<id:key_id>/regenerate/", keys_apis.AdminKeyRegenerateApi.as_view(), name="key-regenerate"),
    path("providers/", providers_apis.AdminProviderListApi.as_view(), name="providers"),
    path("providers/<id:provider_id>/", providers_apis.AdminProviderDetailApi.as_view(), name="provider"),
    path(
        "providers/<id:provider_id>/probe/",
        providers_apis.AdminProviderProbeApi.as_view(),
        name="provider-probe",
    ),
    path("models/", providers_apis.AdminModelListApi.as_view(), name="models"),
    path("models/<id:model_id>/", providers_apis.AdminModelDetailApi.as_view(), name="model"),
    path("prices/", billing_apis.AdminPriceListApi.as_view(), name="prices"),
    path("prices/<id:price_id>/", billing_apis.AdminPriceDetailApi.as_view(), name="price"),
    path("routes/", providers_apis.AdminRouteListApi.as_view(), name="routes"),
    path("routes/<id:route_id>/", providers_apis.AdminRouteDetailApi.as_view(), name="route"),
    path("quotas/", quotas_apis.AdminQuotaListApi.as_view(), name="quotas"),
    path("quotas/<id:quota_id>/", quotas_apis.AdminQuotaDetailApi.as_view(), name="quota"),
    path("usage/", billing_apis.AdminUsageApi.as_view(), name="usage"),
    path("ledger/", billing_apis.AdminLedgerApi.as_view(), name="ledger"),
    path("redemption-codes/", billing_apis.AdminRedemptionCodeListApi.as_view(), name="redemption-codes"),
    path(
        "redemption-codes/<id:code_id>/disable/",
        billing_apis.AdminRedemptionCodeDisableApi.as_view(),
        name="redemption-code-disable",
    ),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("auth/", include("accounts.urls")),
    path("api/me/", include((me_patterns, "me"))),
    path("api/admin/", include((admin_patterns, "staff"))),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # the split view serves Swagger UI's start-up code as a script of its own (?script), not
    # inline: the Content-Security-Policy allows scripts from this origin only
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="docs"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="dashboard/redoc.html"),
        name="redoc",
    ),
    path("dashboard/", include("dashboard.urls")),
]
