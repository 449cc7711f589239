"""Providers, models and provider-model routes under /api/admin/ (staff only).

Provider credentials are write-only: ``api_key`` is accepted on create and update and never
returned (``has_credentials`` says whether there are any).
"""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import (
    HeadersField,
    IdField,
    IsStaff,
    JSONObjectField,
    ListQuerySerializer,
    body,
    ordering_field,
    paginated,
    paginated_response,
    query,
)

from . import selectors, services
from .health import provider_check
from .models import Model, Provider, ProviderModel

PROVIDERS_TAG = ["admin: providers"]
MODELS_TAG = ["admin: models"]
ROUTES_TAG = ["admin: routes"]
INT32 = 2**31 - 1
SMALL = 32767


# --- providers -------------------------------------------------------------------------------


class ProviderSerializer(serializers.ModelSerializer):
    has_credentials = serializers.BooleanField(read_only=True)
    extra_headers = serializers.DictField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Provider
        fields = [
            "id",
            "name",
            "type",
            "base_url",
            "has_credentials",
            "api_version",
            "status",
            "status_reason",
            "status_changed_at",
            "priority",
            "weight",
            "timeout_seconds",
            "max_retries",
            "extra_headers",
            "responses_api",
            "health_check_enabled",
            "health_check_model",
            "health_status",
            "last_health_check_at",
            "last_error",
            "response_time_ms",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class _ProviderWriteSerializer(serializers.Serializer):
    api_key = serializers.CharField(
        required=False,
        allow_blank=True,
        write_only=True,
        max_length=8192,
        help_text="Upstream credentials; stored encrypted, never returned.",
    )
    api_version = serializers.CharField(required=False, allow_blank=True, max_length=32)
    priority = serializers.IntegerField(required=False, min_value=-INT32 - 1, max_value=INT32)
    weight = serializers.IntegerField(required=False, min_value=1, max_value=INT32)
    timeout_seconds = serializers.IntegerField(required=False, min_value=1, max_value=INT32)
    max_retries = serializers.IntegerField(required=False, min_value=0, max_value=SMALL)
    extra_headers = HeadersField(required=False)
    responses_api = serializers.BooleanField(
        required=False, help_text="The upstream serves /v1/responses itself: pass Responses requests through."
    )
    health_check_enabled = serializers.BooleanField(required=False)
    health_check_model = serializers.CharField(required=False, allow_blank=True, max_length=200)
    status = serializers.ChoiceField(choices=Provider.Status.choices, required=False)


class ProviderCreateSerializer(_ProviderWriteSerializer):
    name = serializers.CharField(max_length=100)
    type = serializers.ChoiceField(choices=Provider.Type.choices)
    base_url = serializers.CharField(max_length=500)


class ProviderUpdateSerializer(_ProviderWriteSerializer):
    name = serializers.CharField(required=False, max_length=100)
    type = serializers.ChoiceField(choices=Provider.Type.choices, required=False)
    base_url = serializers.CharField(required=False, max_length=500)
    status_reason = serializers.CharField(required=False, allow_blank=True, max_length=500)


class ProviderFilterSerializer(ListQuerySerializer):
    type = serializers.ChoiceField(choices=Provider.Type.choices, required=False)
    status = serializers.ChoiceField(choices=Provider.Status.choices, required=False)
    health_status = serializers.ChoiceField(choices=Provider.Health.choices, required=False)
    search = serializers.CharField(required=False, max_length=100, help_text="Name or base URL.")
    ordering = ordering_field("name", "priority", "created_at", "response_time_ms", default="-priority")


class ProbeResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    status = serializers.IntegerField(allow_null=True, help_text="HTTP status of the upstream's answer.")
    ms = serializers.IntegerField(help_text="Round trip in milliseconds.")
    error = serializers.CharField(allow_blank=True)
    health_status = serializers.CharField()
    provider_status = serializers.CharField()


def _provider_or_404(provider_id: int) -> Provider:
    provider = selectors.provider_get(provider_id=provider_id)
    if provider is None:
        raise Http404("No such provider.")
    return provider


class AdminProviderListApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        tags=PROVIDERS_TAG,
        operation_id="api_admin_providers_list",
        summary="Providers",
        parameters=[ProviderFilterSerializer],
        responses={200: paginated(ProviderSerializer)},
    )
    def get(self, request):
        providers = selectors.provider_list(filters=query(ProviderFilterSerializer, request))
        return paginated_response(
            request=request, view=self, queryset=providers, serializer_class=ProviderSerializer
        )

    @extend_schema(
        tags=PROVIDERS_TAG,
        summary="Create a provider",
        request=ProviderCreateSerializer,
        responses={201: ProviderSerializer},
    )
    def post(self, request):
        provider = services.provider_create(**body(ProviderCreateSerializer, request))
        return Response(ProviderSerializer(provider).data, status=status.HTTP_201_CREATED)


class AdminProviderDetailApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(tags=PROVIDERS_TAG, summary="A provider", responses={200: ProviderSerializer})
    def get(self, request, provider_id: int):
        return Response(ProviderSerializer(_provider_or_404(provider_id)).data)

    @extend_schema(
        tags=PROVIDERS_TAG,
        summary="Change a provider (api_key replaces the credentials)",
        request=ProviderUpdateSerializer,
        responses={200: ProviderSerializer},
    )
    def patch(self, request, provider_id: int):
        provider = _provider_or_404(provider_id)
        data = dict(body(ProviderUpdateSerializer, request))
        provider = services.provider_update(
            provider=provider,
            api_key=data.pop("api_key", None),
            status=data.pop("status", None),
            status_reason=data.pop("status_reason", ""),
            data=data,
        )
        return Response(ProviderSerializer(provider).data)

    @extend_schema(
        tags=PROVIDERS_TAG,
        summary="Delete a provider that never served a request, with its routes (409 otherwise)",
        responses={204: None},
    )
    def delete(self, request, provider_id: int):
        services.provider_delete(provider=_provider_or_404(provider_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class AdminProviderProbeApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        tags=PROVIDERS_TAG,
        summary="Probe a provider now (one cheap authenticated request) and record the outcome",
        request=None,
        responses={200: ProbeResultSerializer},
    )
    def post(self, request, provider_id: int):
        provider = _provider_or_404(provider_id)
        result = provider_check(provider=provider)
        return Response(
            ProbeResultSerializer(
                {
                    "ok": result.ok,
                    "status": result.status,
                    "ms": result.ms,
                    "error": result.error,
                    "health_status": provider.health_status,
                    "provider_status": provider.status,
                }
            ).data
        )


# --- models ----------------------------------------------------------------------------------


class AdminModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = Model
        fields = ["id", *services.MODEL_FIELDS, "created_at"]
        read_only_fields = fields


class _ModelWriteSerializer(serializers.Serializer):
    display_name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    type = serializers.ChoiceField(choices=Model.Type.choices, required=False)
    context_length = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=INT32)
    max_output_tokens = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=INT32
    )
    supports_streaming = serializers.BooleanField(required=False)
    supports_tools = serializers.BooleanField(required=False)
    supports_vision = serializers.BooleanField(required=False)
    supports_json_mode = serializers.BooleanField(required=False)
    supports_reasoning = serializers.BooleanField(required=False)
    web_search = serializers.BooleanField(
        required=False, help_text="Web search by default for requests that do not say 'web_search'."
    )
    status = serializers.ChoiceField(choices=Model.Status.choices, required=False)
    routing_strategy = serializers.ChoiceField(
        choices=Model.Strategy.choices, required=False, allow_blank=True
    )
    owned_by = serializers.CharField(required=False, allow_blank=True, max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10000)


class ModelCreateSerializer(_ModelWriteSerializer):
    slug = serializers.CharField(max_length=200, help_text="The name clients ask for, e.g. gpt-4o-mini.")


class ModelUpdateSerializer(_ModelWriteSerializer):
    slug = serializers.CharField(required=False, max_length=200)


class ModelFilterSerializer(ListQuerySerializer):
    type = serializers.ChoiceField(choices=Model.Type.choices, required=False)
    status = serializers.ChoiceField(choices=Model.Status.choices, required=False)
    search = serializers.CharField(required=False, max_length=200, help_text="Slug or display name.")
    ordering = ordering_field("slug", "created_at", default="slug")


def _model_or_404(model_id: int) -> Model:
    model = selectors.model_get(model_id=model_id)
    if model is None:
        raise Http404("No such model.")
    return model


class AdminModelListApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        tags=MODELS_TAG,
        operation_id="api_admin_models_list",
        summary="Models",
        parameters=[ModelFilterSerializer],
        responses={200: paginated(AdminModelSerializer)},
    )
    def get(self, request):
        models = selectors.model_list(filters=query(ModelFilterSerializer, request))
        return paginated_response(
            request=request, view=self, queryset=models, serializer_class=AdminModelSerializer
        )

    @extend_schema(
        tags=MODELS_TAG,
        summary="Create a model",
        request=ModelCreateSerializer,
        responses={201: AdminModelSerializer},
    )
    def post(self, request):
        model = services.model_create(**body(ModelCreateSerializer, request))
        return Response(AdminModelSerializer(model).data, status=status.HTTP_201_CREATED)


class AdminModelDetailApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(tags=MODELS_TAG, summary="A model", responses={200: AdminModelSerializer})
    def get(self, request, model_id: int):
        return Response(AdminModelSerializer(_model_or_404(model_id)).data)

    @extend_schema(
        tags=MODELS_TAG,
        summary="Change a model",
        request=ModelUpdateSerializer,
        responses={200: AdminModelSerializer},
    )
    def patch(self, request, model_id: int):
        model = services.model_update(
            model=_model_or_404(model_id), data=body(ModelUpdateSerializer, request)
        )
        return Response(AdminModelSerializer(model).data)

    @extend_schema(
        tags=MODELS_TAG,
        summary="Delete a model without routes or prices (409 otherwise: disable it)",
        responses={204: None},
    )
    def delete(self, request, model_id: int):
        services.model_delete(model=_model_or_404(model_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- routes ----------------------------------------------------------------------------------


class RouteSerializer(serializers.ModelSerializer):
    provider_name = serializers.CharField(source="provider.name", read_only=True)
    model_slug = serializers.CharField(source="model.slug", read_only=True)
    extra_headers = serializers.DictField(child=serializers.CharField(), read_only=True)
    extra_params = serializers.DictField(read_only=True)

    class Meta:
        model = ProviderModel
        fields = [
            "id",
            "provider",
            "provider_name",
            "model",
            "model_slug",
            "upstream_model",
            "enabled",
            "priority",
            "weight",
            "extra_headers",
            "extra_params",
            "bill_upstream_model",
            "created_at",
        ]
        read_only_fields = fields


class _RouteWriteSerializer(serializers.Serializer):
    upstream_model = serializers.CharField(required=False, allow_blank=True, max_length=200)
    enabled = serializers.BooleanField(required=False)
    priority = serializers.IntegerField(required=False, min_value=-INT32 - 1, max_value=INT32)
    weight = serializers.IntegerField(required=False, min_value=1, max_value=INT32)
    extra_headers = HeadersField(required=False)
    extra_params = JSONObjectField(required=False, help_text="Merged into the upstream request body.")
    bill_upstream_model = serializers.BooleanField(required=False)


class RouteCreateSerializer(_RouteWriteSerializer):
    provider = IdField()
    model = IdField()

    def validate_provider(self, value):
        provider = selectors.provider_get(provider_id=value)
        if provider is None:
            raise serializers.ValidationError("No such provider.")
        return provider

    def validate_model(self, value):
        model = selectors.model_get(model_id=value)
        if model is None:
            raise serializers.ValidationError("No such model.")
        return model


class RouteUpdateSerializer(_RouteWriteSerializer):
    pass


class RouteFilterSerializer(ListQuerySerializer):
    provider = IdField(required=False)
    model = IdField(required=False)
    enabled = serializers.BooleanField(required=False, allow_null=True, default=None)
    ordering = ordering_field("model__slug", "priority", "created_at", default="model__slug")


def _route_or_404(route_id: int) -> ProviderModel:
    route = selectors.route_get(route_id=route_id)
    if route is None:
        raise Http404("No such route.")
    return route


class AdminRouteListApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        tags=ROUTES_TAG,
        operation_id="api_admin_routes_list",
        summary="Provider-model routes",
        parameters=[RouteFilterSerializer],
        responses={200: paginated(RouteSerializer)},
    )
    def get(self, request):
        routes = selectors.route_list(filters=query(RouteFilterSerializer, request))
        return paginated_response(
            request=request, view=self, queryset=routes, serializer_class=RouteSerializer
        )

    @extend_schema(
        tags=ROUTES_TAG,
        summary="Route a model to a provider",
        request=RouteCreateSerializer,
        responses={201: RouteSerializer},
    )
    def post(self, request):
        route = services.route_create(**body(RouteCreateSerializer, request))
        return Response(RouteSerializer(route).data, status=status.HTTP_201_CREATED)


class AdminRouteDetailApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(tags=ROUTES_TAG, summary="A route", responses={200: RouteSerializer})
    def get(self, request, route_id: int):
        return Response(RouteSerializer(_route_or_404(route_id)).data)

    @extend_schema(
        tags=ROUTES_TAG,
        summary="Change a route",
        request=RouteUpdateSerializer,
        responses={200: RouteSerializer},
    )
    def patch(self, request, route_id: int):
        route = services.route_update(
            route=_route_or_404(route_id), data=body(RouteUpdateSerializer, request)
        )
        return Response(RouteSerializer(route).data)

    @extend_schema(tags=ROUTES_TAG, summary="Delete a route", responses={204: None})
    def delete(self, request, route_id: int):
        services.route_delete(route=_route_or_404(route_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
