"""Quotas: the status of yours under /api/me/quotas/, every quota under /api/admin/quotas/.

``limit``, ``used`` and ``remaining`` are strings: a decimal amount of money for ``cost``
quotas (``"5.000000000"``), a whole number of requests or tokens otherwise (``"1000"``).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from billing.selectors import quota_status_of_account
from core.api import (
    IdField,
    IsActiveUser,
    IsStaff,
    ListQuerySerializer,
    amount_str,
    body,
    ordering_field,
    paginated,
    paginated_response,
    query,
)
from keys.models import APIKey

from . import services
from .amounts import limit_parse
from .models import Quota

ME_TAG = ["me: usage and billing"]
ADMIN_TAG = ["admin: quotas"]


def quota_amount(metric: str, value: int) -> str:
    return amount_str(value) if metric == Quota.Metric.COST else str(value)


class QuotaStatusSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    scope = serializers.ChoiceField(choices=["user", "key"])
    api_key = serializers.IntegerField(allow_null=True)
    metric = serializers.ChoiceField(choices=Quota.Metric.choices)
    period = serializers.ChoiceField(choices=Quota.Period.choices)
    limit = serializers.CharField()
    used = serializers.CharField(help_text="As settled so far (requests in flight are not in it yet).")
    remaining = serializers.CharField()
    period_start = serializers.DateTimeField()
    resets_at = serializers.DateTimeField(allow_null=True)

    def to_representation(self, row):
        metric = row["metric"]
        row = {
            **row,
            **{name: quota_amount(metric, row[name]) for name in ("limit", "used", "remaining")},
        }
        return super().to_representation(row)


class QuotaSerializer(serializers.ModelSerializer):
    limit = serializers.SerializerMethodField()
    reset_time = serializers.CharField(
        read_only=True, allow_null=True, help_text="HH:MM:SS, UTC; null: midnight."
    )

    class Meta:
        model = Quota
        fields = ["id", "api_key", "user", "metric", "period", "limit", "reset_time", "status", "created_at"]
        read_only_fields = fields

    def get_limit(self, quota) -> str:
        return quota_amount(quota.metric, quota.limit)


class _QuotaWriteSerializer(serializers.Serializer):
    limit = serializers.CharField(
        max_length=32,
        help_text='Requests or tokens as a whole number ("1000"), or an amount for cost quotas ("5.00").',
    )
    reset_time = serializers.TimeField(
        required=False, allow_null=True, help_text="Start of day/month periods (UTC)."
    )
    status = serializers.ChoiceField(choices=Quota.Status.choices, required=False)

    def _metric(self) -> str:
        raise NotImplementedError

    def validate_limit(self, value):
        return value.strip()

    def validate(self, attrs):
        if "limit" in attrs:
            try:
                attrs["limit"] = limit_parse(metric=self._metric(), text=attrs["limit"])
            except DjangoValidationError as exc:
                raise serializers.ValidationError({"limit": exc.messages}) from None
        return attrs


class QuotaCreateSerializer(_QuotaWriteSerializer):
    api_key = IdField(required=False, allow_null=True, help_text="The key this quota limits (or user).")
    user = IdField(required=False, allow_null=True, help_text="The user this quota limits (or api_key).")
    metric = serializers.ChoiceField(choices=Quota.Metric.choices)
    period = serializers.ChoiceField(choices=Quota.Period.choices)

    def _metric(self) -> str:
        return self.initial_data.get("metric")

    def validate_api_key(self, value):
        if value is None:
            return None
        key = APIKey.objects.filter(pk=value).first()
        if key is None:
            raise serializers.ValidationError("No such API key.")
        return key

    def validate_user(self, value):
        if value is None:
            return None
        user = User.objects.filter(pk=value).first()
        if user is None:
            raise serializers.ValidationError("No such user.")
        return user

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if (attrs.get("api_key") is None) == (attrs.get("user") is None):
            raise serializers.ValidationError("Give exactly one of api_key or user.")
        return attrs


class QuotaUpdateSerializer(_QuotaWriteSerializer):
    limit = serializers.CharField(required=False, max_length=32)

    def _metric(self) -> str:
        return self.instance.metric


class QuotaFilterSerializer(ListQuerySerializer):
    user = IdField(required=False)
    api_key = IdField(required=False)
    metric = serializers.ChoiceField(choices=Quota.Metric.choices, required=False)
    status = serializers.ChoiceField(choices=Quota.Status.choices, required=False)
    ordering = ordering_field("id", "created_at", default="id")


class MyQuotasApi(APIView):
    permission_classes = [IsActiveUser]

    @extend_schema(
        tags=ME_TAG,
        summary="Your quotas and your keys' quotas, with their use in the current period",
        responses={200: QuotaStatusSerializer(many=True)},
    )
    def get(self, request):
        return Response(QuotaStatusSerializer(quota_status_of_account(user=request.user), many=True).data)


def _quota_list(filters: dict):  # a read: belongs in quotas/selectors.py (owned by concurrent work)
    quotas = Quota.objects.all()
    for name in ("user", "api_key"):
        if filters.get(name):
            quotas = quotas.filter(**{f"{name}_id": filters[name]})
    for name in ("metric", "status"):
        if filters.get(name):
            quotas = quotas.filter(**{name: filters[name]})
    return quotas.order_by(filters.get("ordering") or "id", "id")


def _quota_or_404(quota_id: int) -> Quota:
    quota = Quota.objects.filter(pk=quota_id).first()
    if quota is None:
        raise Http404("No such quota.")
    return quota


class AdminQuotaListApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        tags=ADMIN_TAG,
        operation_id="api_admin_quotas_list",
        summary="Quotas",
        parameters=[QuotaFilterSerializer],
        responses={200: paginated(QuotaSerializer)},
    )
    def get(self, request):
        quotas = _quota_list(query(QuotaFilterSerializer, request))
        return paginated_response(
            request=request, view=self, queryset=quotas, serializer_class=QuotaSerializer
        )

    @extend_schema(
        tags=ADMIN_TAG,
        summary="Create a quota on a user or a key",
        request=QuotaCreateSerializer,
        responses={201: QuotaSerializer},
    )
    def post(self, request):
        quota = services.quota_create(**body(QuotaCreateSerializer, request))
        return Response(QuotaSerializer(quota).data, status=status.HTTP_201_CREATED)


class AdminQuotaDetailApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(tags=ADMIN_TAG, summary="A quota", responses={200: QuotaSerializer})
    def get(self, request, quota_id: int):
        return Response(QuotaSerializer(_quota_or_404(quota_id)).data)

    @extend_schema(
        tags=ADMIN_TAG,
        summary="Change a quota's limit, reset time or status",
        request=QuotaUpdateSerializer,
        responses={200: QuotaSerializer},
    )
    def patch(self, request, quota_id: int):
        quota = _quota_or_404(quota_id)
        data = body(QuotaUpdateSerializer, request, instance=quota)
        return Response(QuotaSerializer(services.quota_update(quota=quota, data=data)).data)

    @extend_schema(tags=ADMIN_TAG, summary="Delete a quota and its counters", responses={204: None})
    def delete(self, request, quota_id: int):
        services.quota_delete(quota=_quota_or_404(quota_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
