"""Usage, ledger, balance, prices and redemption codes.

Yours under /api/me/ (usage, usage/daily, ledger, balance, models, redeem); everyone's
under /api/admin/ (usage, ledger, prices, redemption-codes) for staff. Amounts are
decimal strings of the currency unit, exact to the nano.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import (
    IdField,
    IsActiveUser,
    IsStaff,
    ListQuerySerializer,
    MoneyField,
    body,
    ordering_field,
    paginated,
    paginated_response,
    query,
)
from keys.selectors import api_key_owned
from providers.models import Model

from . import selectors, services
from .models import BillingRecord, ModelPrice, RedemptionCode, UsageLog
from .services import RedemptionError, redemption_codes_generate, redemption_redeem

ME_USAGE = ["me: usage and billing"]
ADMIN_USAGE = ["admin: usage and ledger"]
ADMIN_PRICES = ["admin: prices"]
ADMIN_CODES = ["admin: redemption codes"]


# --- fields and filters ----------------------------------------------------------------------


@extend_schema_field(
    {
        "oneOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}],
        "description": "A date (YYYY-MM-DD, in the gateway's time zone) or an ISO 8601 date-time.",
    }
)
class DateOrDateTimeField(serializers.Field):
    default_error_messages = {"invalid": "Enter a date (YYYY-MM-DD) or an ISO 8601 date-time."}

    def to_internal_value(self, data):
        if not isinstance(data, str) or len(data) > 64:
            self.fail("invalid")
        try:
            return serializers.DateTimeField().to_internal_value(data)
        except serializers.ValidationError:
            pass
        try:
            return date.fromisoformat(data.strip())
        except ValueError:
            self.fail("invalid")

    def to_representation(self, value):
        return value.isoformat()


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


class _TimeRangeFilter(ListQuerySerializer):
    start = DateOrDateTimeField(required=False, help_text="From this time (a date: its start).")
    end = DateOrDateTimeField(
        required=False, help_text="Before this time (a date: up to its end, inclusive)."
    )

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if isinstance(attrs.get("start"), date) and not isinstance(attrs["start"], datetime):
            attrs["start"] = _day_start(attrs["start"])
        if isinstance(attrs.get("end"), date) and not isinstance(attrs["end"], datetime):
            attrs["end"] = _day_start(attrs["end"] + timedelta(days=1))
        return attrs


class UsageFilterSerializer(_TimeRangeFilter):
    api_key = IdField(required=False, help_text="Only requests made with this key.")
    model = serializers.CharField(required=False, max_length=200, help_text="Requested or billed model slug.")
    status = serializers.ChoiceField(
        choices=["success", "error"], required=False, help_text="success: HTTP < 400; error: HTTP >= 400."
    )
    status_code = serializers.IntegerField(required=False, min_value=100, max_value=599)
    ordering = ordering_field("created_at", "cost", "latency_ms", "total_tokens", default="-created_at")


class AdminUsageFilterSerializer(UsageFilterSerializer):
    user = IdField(required=False)
    provider = IdField(required=False)
    request_id = serializers.CharField(required=False, max_length=64)


class LedgerFilterSerializer(_TimeRangeFilter):
    kind = serializers.ChoiceField(choices=BillingRecord.Kind.choices, required=False)
    api_key = IdField(required=False)
    ordering = ordering_field("created_at", "amount", default="-created_at")


class AdminLedgerFilterSerializer(LedgerFilterSerializer):
    user = IdField(required=False)


def _own_key_filter(request, filters: dict) -> dict:
    """A filter naming someone else's key is a 404, like the key itself would be."""
    if filters.get("api_key") and not api_key_owned(key_id=filters["api_key"], user=request.user):
        raise Http404("No such API key.")
    return filters


# --- output serializers ----------------------------------------------------------------------


_MONEY = MoneyField()


@extend_schema_field(
    {
        "type": "object",
        "description": "Requests answered by several upstream calls (the gateway's web search): "
        "`rounds` (model, prompt/completion/cached tokens, cost of each), `searches` (query, results, "
        "error), `searches_billed`, `search_price`, `search_cost`. Empty for other requests.",
        "additionalProperties": True,
    }
)
class BreakdownField(serializers.Field):
    """The usage log's breakdown with its amounts as decimal strings, like every cost."""

    def to_representation(self, value):
        if not value:
            return {}
        out = dict(value)
        out["rounds"] = [
            {**r, "cost": _MONEY.to_representation(r.get("cost", 0))} for r in value.get("rounds", ())
        ]
        for name in ("search_price", "search_cost"):
            if name in out:
                out[name] = _MONEY.to_representation(out[name])
        return out


class UsageLogSerializer(serializers.ModelSerializer):
    cost = MoneyField(read_only=True)
    breakdown = BreakdownField(read_only=True)

    class Meta:
        model = UsageLog
        fields = [
            "id",
            "request_id",
            "created_at",
            "api_key",
            "request_type",
            "endpoint",
            "model_requested",
            "model_billed",
            "stream",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "total_tokens",
            "usage_estimated",
            "cost",
            "status_code",
            "error",
            "latency_ms",
            "ttft_ms",
            "client_disconnected",
            "breakdown",
        ]
        read_only_fields = fields


class AdminUsageLogSerializer(UsageLogSerializer):
    providers_tried = serializers.ListField(child=serializers.DictField(), read_only=True)

    class Meta(UsageLogSerializer.Meta):
        fields = [
            *UsageLogSerializer.Meta.fields,
            "user",
            "provider",
            "model_upstream",
            "providers_tried",
            "price",
            "client_ip",
            "request_bytes",
            "response_bytes",
        ]
        read_only_fields = fields


class DailyUsageSerializer(serializers.Serializer):
    day = serializers.DateField()
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cost = MoneyField()


class LedgerEntrySerializer(serializers.ModelSerializer):
    amount = MoneyField(read_only=True, help_text="Signed: negative is a charge.")
    balance_after = MoneyField(read_only=True)

    class Meta:
        model = BillingRecord
        fields = [
            "id",
            "kind",
            "amount",
            "balance_after",
            "currency",
            "request_id",
            "api_key",
            "description",
            "created_at",
        ]
        read_only_fields = fields


class AdminLedgerEntrySerializer(LedgerEntrySerializer):
    class Meta(LedgerEntrySerializer.Meta):
        fields = [*LedgerEntrySerializer.Meta.fields, "user", "created_by"]
        read_only_fields = fields


class BalanceSerializer(serializers.Serializer):
    balance = MoneyField()
    credit_limit = MoneyField(help_text="How far below zero the balance may go.")
    available = MoneyField(help_text="Balance plus credit limit: what can still be spent.")
    currency = serializers.CharField()


class RedeemSerializer(serializers.Serializer):
    code = serializers.CharField(max_length=200)


class CatalogPriceSerializer(serializers.Serializer):
    input_per_1m = MoneyField()
    output_per_1m = MoneyField()
    cached_input_per_1m = MoneyField()
    per_request = MoneyField()
    currency = serializers.CharField()


class CatalogModelSerializer(serializers.Serializer):
    slug = serializers.CharField(source="model.slug")
    display_name = serializers.CharField(source="model.display_name")
    type = serializers.CharField(source="model.type")
    status = serializers.CharField(source="model.status")
    context_length = serializers.IntegerField(source="model.context_length", allow_null=True)
    max_output_tokens = serializers.IntegerField(source="model.max_output_tokens", allow_null=True)
    supports_streaming = serializers.BooleanField(source="model.supports_streaming")
    supports_tools = serializers.BooleanField(source="model.supports_tools")
    supports_vision = serializers.BooleanField(source="model.supports_vision")
    supports_json_mode = serializers.BooleanField(source="model.supports_json_mode")
    multiplier = serializers.DecimalField(
        max_digits=10, decimal_places=4, allow_null=True, help_text="Your price group's multiplier."
    )
    price = CatalogPriceSerializer(
        allow_null=True, help_text="Your prices (after the multiplier, rounded up to a nano); null: unpriced."
    )


class PriceSerializer(serializers.ModelSerializer):
    model_slug = serializers.CharField(source="model.slug", read_only=True)
    input_per_1m = MoneyField(read_only=True)
    output_per_1m = MoneyField(read_only=True)
    cached_input_per_1m = MoneyField(read_only=True)
    per_request = MoneyField(read_only=True)

    class Meta:
        model = ModelPrice
        fields = [
            "id",
            "model",
            "model_slug",
            "input_per_1m",
            "output_per_1m",
            "cached_input_per_1m",
            "per_request",
            "currency",
            "effective_from",
            "effective_until",
            "note",
            "created_at",
        ]
        read_only_fields = fields


class PriceCreateSerializer(serializers.Serializer):
    model = IdField()
    input_per_1m = MoneyField(min_value=0, default=0, help_text="Per 1M prompt tokens.")
    output_per_1m = MoneyField(min_value=0, default=0, help_text="Per 1M completion tokens.")
    cached_input_per_1m = MoneyField(min_value=0, default=0, help_text="Per 1M cached prompt tokens.")
    per_request = MoneyField(min_value=0, default=0, help_text="Fixed price per call.")
    currency = serializers.CharField(max_length=3, default=settings.BILLING_CURRENCY)
    effective_from = serializers.DateTimeField(required=False, help_text="Default: now.")
    effective_until = serializers.DateTimeField(required=False, allow_null=True)
    note = serializers.CharField(required=False, allow_blank=True, max_length=255, default="")

    def validate_model(self, value):
        model = Model.objects.filter(pk=value).first()
        if model is None:
            raise serializers.ValidationError("No such model.")
        return model


class PriceUpdateSerializer(serializers.Serializer):
    effective_until = serializers.DateTimeField(required=False, allow_null=True)
    note = serializers.CharField(required=False, allow_blank=True, max_length=255)


class PriceFilterSerializer(ListQuerySerializer):
    model = IdField(required=False)
    in_force = serializers.BooleanField(required=False, help_text="Only the versions in force now.")
    ordering = ordering_field("effective_from", "created_at", default="-effective_from")


class RedemptionCodeSerializer(serializers.ModelSerializer):
    amount = MoneyField(read_only=True)

    class Meta:
        model = RedemptionCode
        fields = [
            "id",
            "prefix",
            "amount",
            "batch",
            "status",
            "expires_at",
            "created_by",
            "created_at",
            "redeemed_by",
            "redeemed_at",
        ]
        read_only_fields = fields


class RedemptionGenerateSerializer(serializers.Serializer):
    count = serializers.IntegerField(min_value=1, max_value=1000)
    amount = MoneyField(min_value=1, help_text="Credit of each code.")
    batch = serializers.CharField(required=False, allow_blank=True, max_length=100, default="")
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class GeneratedCodesSerializer(serializers.Serializer):
    codes = serializers.ListField(child=serializers.CharField(), help_text="Shown only in this answer.")
    amount = MoneyField()
    batch = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)


class RedemptionCodeFilterSerializer(ListQuerySerializer):
    status = serializers.ChoiceField(choices=RedemptionCode.Status.choices, required=False)
    batch = serializers.CharField(required=False, max_length=100)
    redeemed_by = IdField(required=False)
    ordering = ordering_field("created_at", "amount", "redeemed_at", default="-created_at")


# --- yours -----------------------------------------------------------------------------------


class MyUsageApi(APIView):
    permission_classes = [IsActiveUser]

    @extend_schema(
        tags=ME_USAGE,
        operation_id="api_me_usage_list",
        summary="Your requests (usage logs), newest first",
        parameters=[UsageFilterSerializer],
        responses={200: paginated(UsageLogSerializer)},
    )
    def get(self, request):
        filters = _own_key_filter(request, query(UsageFilterSerializer, request))
        logs = selectors.usage_log_list(user=request.user, filters=filters)
        return paginated_response(
            request=request, view=self, queryset=logs, serializer_class=UsageLogSerializer
        )


class DaysSerializer(serializers.Serializer):
    days = serializers.IntegerField(min_value=1, max_value=366, default=30)


class MyDailyUsageApi(APIView):
    permission_classes = [IsActiveUser]

    @extend_schema(
        tags=ME_USAGE,
        summary="Your usage per day (oldest first, days without traffic are zeros)",
        parameters=[DaysSerializer],
        responses={200: DailyUsageSerializer(many=True)},
    )
    def get(self, request):
        days = query(DaysSerializer, request)["days"]
        return Response(
            DailyUsageSerializer(selectors.usage_daily(user=request.user, days=days), many=True).data
        )


class MyLedgerApi(APIView):
    permission_classes = [IsActiveUser]

    @extend_schema(
        tags=ME_USAGE,
        operation_id="api_me_ledger_list",
        summary="Your ledger: every change of your balance",
        parameters=[LedgerFilterSerializer],
        responses={200: paginated(LedgerEntrySerializer)},
    )
    def get(self, request):
        filters = _own_key_filter(request, query(LedgerFilterSerializer, request))
        records = selectors.ledger_list(user=request.user, filters=filters)
        return paginated_response(
            request=request, view=self, queryset=records, serializer_class=LedgerEntrySerializer
        )


class MyBalanceApi(APIView):
    permission_classes = [IsActiveUser]

    @extend_schema(tags=ME_USAGE, summary="Your balance", responses={200: BalanceSerializer})
    def get(self, request):
        return Response(BalanceSerializer(selectors.balance_of(user=request.user)).data)


class MyRedeemApi(APIView):
    permission_classes = [IsActiveUser]

    @extend_schema(
        tags=ME_USAGE,
        summary="Redeem a code: its amount is added to your balance",
        request=RedeemSerializer,
        responses={201: LedgerEntrySerializer},
    )
    def post(self, request):
        data = body(RedeemSerializer, request)
        try:
            record = redemption_redeem(user=request.user, code=data["code"])
        except RedemptionError as exc:
            raise exceptions.ValidationError({"code": [str(exc)]}) from None
        return Response(LedgerEntrySerializer(record).data, status=status.HTTP_201_CREATED)


class MyModelsApi(APIView):
    permission_classes = [IsActiveUser]

    @extend_schema(
        tags=ME_USAGE,
        summary="The models you can call, with your prices",
        responses={200: CatalogModelSerializer(many=True)},
    )
    def get(self, request):
        return Response(
            CatalogModelSerializer(selectors.model_catalog_for(user=request.user), many=True).data
        )


# --- staff -----------------------------------------------------------------------------------


class AdminUsageApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        tags=ADMIN_USAGE,
        operation_id="api_admin_usage_list",
        summary="Usage logs of everyone",
        parameters=[AdminUsageFilterSerializer],
        responses={200: paginated(AdminUsageLogSerializer)},
    )
    def get(self, request):
        logs = selectors.usage_log_list(filters=query(AdminUsageFilterSerializer, request))
        return paginated_response(
            request=request, view=self, queryset=logs, serializer_class=AdminUsageLogSerializer
        )


class AdminLedgerApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        tags=ADMIN_USAGE,
        operation_id="api_admin_ledger_list",
        summary="The ledger of everyone",
        parameters=[AdminLedgerFilterSerializer],
        responses={200: paginated(AdminLedgerEntrySerializer)},
    )
    def get(self, request):
        records = selectors.ledger_list(filters=query(AdminLedgerFilterSerializer, request))
        return paginated_response(
            request=request, view=self, queryset=records, serializer_class=AdminLedgerEntrySerializer
        )


def _price_or_404(price_id: int) -> ModelPrice:
    price = selectors.model_price_get(price_id=price_id)
    if price is None:
        raise Http404("No such price.")
    return price


class AdminPriceListApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        tags=ADMIN_PRICES,
        operation_id="api_admin_prices_list",
        summary="Price versions",
        parameters=[PriceFilterSerializer],
        responses={200: paginated(PriceSerializer)},
    )
    def get(self, request):
        prices = selectors.model_price_list(filters=query(PriceFilterSerializer, request))
        return paginated_response(
            request=request, view=self, queryset=prices, serializer_class=PriceSerializer
        )

    @extend_schema(
        tags=ADMIN_PRICES,
        summary="Publish a price version (it takes over at effective_from)",
        request=PriceCreateSerializer,
        responses={201: PriceSerializer},
    )
    def post(self, request):
        price = services.model_price_create(**body(PriceCreateSerializer, request))
        return Response(PriceSerializer(price).data, status=status.HTTP_201_CREATED)


class AdminPriceDetailApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(tags=ADMIN_PRICES, summary="A price version", responses={200: PriceSerializer})
    def get(self, request, price_id: int):
        return Response(PriceSerializer(_price_or_404(price_id)).data)

    @extend_schema(
        tags=ADMIN_PRICES,
        summary="End a price version or change its note (amounts are history: publish a new version)",
        request=PriceUpdateSerializer,
        responses={200: PriceSerializer},
    )
    def patch(self, request, price_id: int):
        price = _price_or_404(price_id)
        price = services.model_price_update(price=price, data=body(PriceUpdateSerializer, request))
        return Response(PriceSerializer(price).data)

    @extend_schema(
        tags=ADMIN_PRICES,
        summary="Delete a price version no request was billed with (409 otherwise)",
        responses={204: None},
    )
    def delete(self, request, price_id: int):
        services.model_price_delete(price=_price_or_404(price_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class AdminRedemptionCodeListApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        tags=ADMIN_CODES,
        operation_id="api_admin_redemption_codes_list",
        summary="Redemption codes (their hashes and plain codes are never shown)",
        parameters=[RedemptionCodeFilterSerializer],
        responses={200: paginated(RedemptionCodeSerializer)},
    )
    def get(self, request):
        codes = selectors.redemption_code_list(filters=query(RedemptionCodeFilterSerializer, request))
        return paginated_response(
            request=request, view=self, queryset=codes, serializer_class=RedemptionCodeSerializer
        )

    @extend_schema(
        tags=ADMIN_CODES,
        summary="Generate codes (the plain codes are in this answer only)",
        request=RedemptionGenerateSerializer,
        responses={201: GeneratedCodesSerializer},
    )
    def post(self, request):
        data = body(RedemptionGenerateSerializer, request)
        try:
            codes = redemption_codes_generate(**data, created_by=request.user)
        except RedemptionError as exc:
            raise exceptions.ValidationError(str(exc)) from None
        result = {
            "codes": codes,
            "amount": data["amount"],
            "batch": data["batch"],
            "expires_at": data["expires_at"],
        }
        return Response(GeneratedCodesSerializer(result).data, status=status.HTTP_201_CREATED)


class AdminRedemptionCodeDisableApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        tags=ADMIN_CODES,
        summary="Disable an unused code",
        request=None,
        responses={200: RedemptionCodeSerializer},
    )
    def post(self, request, code_id: int):
        code = selectors.redemption_code_get(code_id=code_id)
        if code is None:
            raise Http404("No such redemption code.")
        return Response(RedemptionCodeSerializer(services.redemption_code_disable(code=code)).data)
