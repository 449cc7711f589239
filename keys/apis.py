"""API keys: your own under /api/me/keys/, anyone's under /api/admin/keys/ (staff).

The plain key appears once, in the answer that creates it (create, regenerate); afterwards
only its prefix is shown. The hash is never returned.
"""

from __future__ import annotations

from datetime import timedelta

from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from core.api import (
    IdField,
    IsActiveUser,
    IsStaff,
    JSONObjectField,
    ListQuerySerializer,
    MoneyField,
    body,
    ordering_field,
    paginated,
    paginated_response,
    query,
)

from . import services
from .models import APIKey
from .selectors import api_key_get, api_key_list

ME_TAG = ["me: keys"]
ADMIN_TAG = ["admin: keys"]
INT32 = 2**31 - 1


class KeySerializer(serializers.ModelSerializer):
    budget = MoneyField(read_only=True, allow_null=True, help_text="Spending cap; null: none.")
    spent = MoneyField(read_only=True)

    class Meta:
        model = APIKey
        fields = [
            "id",
            "user",
            "name",
            "prefix",
            "status",
            "expires_at",
            "allowed_models",
            "allowed_ips",
            "rpm_limit",
            "tpm_limit",
            "concurrency_limit",
            "budget",
            "spent",
            "metadata",
            "web_search",
            "last_used_at",
            "created_at",
            "revoked_at",
            "replaced_by",
            "valid_until",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "allowed_models": {"help_text": "Model slugs; empty allows every model."},
            "allowed_ips": {"help_text": "IPs or CIDR ranges; empty allows every address."},
            "valid_until": {"help_text": "Set on a regenerated key: it stops working at this time."},
        }

    allowed_models = serializers.ListField(child=serializers.CharField(), read_only=True)
    allowed_ips = serializers.ListField(child=serializers.CharField(), read_only=True)
    metadata = serializers.DictField(read_only=True)


class IssuedKeySerializer(KeySerializer):
    key = serializers.CharField(read_only=True, help_text="The plain key. Shown only in this answer.")

    class Meta(KeySerializer.Meta):
        fields = [*KeySerializer.Meta.fields, "key"]
        read_only_fields = fields

    def to_representation(self, issued):
        data = super().to_representation(issued.key)
        data["key"] = issued.plain
        return data


class KeyWriteSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, max_length=200
    )
    allowed_ips = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, max_length=200
    )
    rpm_limit = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=INT32)
    tpm_limit = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=INT32)
    concurrency_limit = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=INT32
    )
    budget = MoneyField(required=False, allow_null=True, min_value=0)
    metadata = JSONObjectField(required=False)
    web_search = serializers.BooleanField(
        required=False,
        help_text="Web search by default for this key's requests that do not say 'web_search'.",
    )

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("The expiry must be in the future.")
        return value


class KeyCreateSerializer(KeyWriteSerializer):
    pass


class KeyUpdateSerializer(KeyWriteSerializer):
    pass


class AdminKeyCreateSerializer(KeyWriteSerializer):
    user = IdField(help_text="Owner of the new key.")

    def validate_user(self, value):
        user = User.objects.filter(pk=value).exclude(status=User.Status.DELETED).first()
        if user is None:
            raise serializers.ValidationError("No such user.")
        return user


class RegenerateSerializer(serializers.Serializer):
    grace_seconds = serializers.IntegerField(
        min_value=0,
        max_value=int(services.MAX_GRACE.total_seconds()),
        default=3600,
        help_text="How long the old key keeps working (0: it stops at once).",
    )


class KeyFilterSerializer(ListQuerySerializer):
    status = serializers.ChoiceField(choices=APIKey.Status.choices, required=False)
    search = serializers.CharField(
        required=False, max_length=100, help_text="Name, or the start of the prefix."
    )
    ordering = ordering_field("created_at", "name", "last_used_at", "expires_at", default="-created_at")


class AdminKeyFilterSerializer(KeyFilterSerializer):
    user = IdField(required=False)


# --- views: one set of behaviour, two scopes -------------------------------------------------


class _KeyScope(APIView):
    """``owner`` is the user whose keys this view may touch; None means anyone's (staff)."""

    def owner(self, request) -> User | None:
        return request.user

    def get_key(self, request, key_id: int) -> APIKey:
        key = api_key_get(key_id=key_id, user=self.owner(request))
        if key is None:
            raise Http404("No such API key.")
        return key


class _KeyListBase(_KeyScope):
    filter_serializer = KeyFilterSerializer
    create_serializer = KeyCreateSerializer

    def get(self, request):
        keys = api_key_list(user=self.owner(request), filters=query(self.filter_serializer, request))
        return paginated_response(request=request, view=self, queryset=keys, serializer_class=KeySerializer)

    def post(self, request):
        data = dict(body(self.create_serializer, request))
        owner = data.pop("user", None) or request.user
        issued = services.api_key_create(user=owner, **data)
        return Response(IssuedKeySerializer(issued).data, status=status.HTTP_201_CREATED)


class _KeyDetailBase(_KeyScope):
    def get(self, request, key_id: int):
        return Response(KeySerializer(self.get_key(request, key_id)).data)

    def patch(self, request, key_id: int):
        key = self.get_key(request, key_id)
        data = body(KeyUpdateSerializer, request)
        key = services.api_key_update(key=key, data=data)
        return Response(KeySerializer(key).data)


class _KeyRevokeBase(_KeyScope):
    def post(self, request, key_id: int):
        key = services.api_key_revoke(key=self.get_key(request, key_id))
        return Response(KeySerializer(key).data)


class _KeyRegenerateBase(_KeyScope):
    def post(self, request, key_id: int):
        key = self.get_key(request, key_id)
        data = body(RegenerateSerializer, request)
        issued = services.api_key_regenerate(key=key, grace=timedelta(seconds=data["grace_seconds"]))
        return Response(IssuedKeySerializer(issued).data, status=status.HTTP_201_CREATED)


def _schemas(tag: str, who: str, filters, create, scope: str):
    return {
        "list": extend_schema(
            tags=[tag],
            operation_id=f"api_{scope}_keys_list",
            summary=f"{who} keys",
            parameters=[filters],
            responses={200: paginated(KeySerializer)},
        ),
        "create": extend_schema(
            tags=[tag],
            summary="Create a key (the plain key is in this answer only)",
            request=create,
            responses={201: IssuedKeySerializer},
        ),
        "get": extend_schema(tags=[tag], summary="A key", responses={200: KeySerializer}),
        "patch": extend_schema(
            tags=[tag],
            summary="Change a key's name, limits, allowed models and IPs, budget or expiry",
            request=KeyUpdateSerializer,
            responses={200: KeySerializer},
        ),
        "revoke": extend_schema(
            tags=[tag], summary="Revoke a key (at once)", request=None, responses={200: KeySerializer}
        ),
        "regenerate": extend_schema(
            tags=[tag],
            summary="Regenerate a key: a new key now, the old one works for a grace period",
            request=RegenerateSerializer,
            responses={201: IssuedKeySerializer},
        ),
    }


_ME = _schemas(ME_TAG[0], "Your", KeyFilterSerializer, KeyCreateSerializer, "me")
_ADMIN = _schemas(ADMIN_TAG[0], "All users'", AdminKeyFilterSerializer, AdminKeyCreateSerializer, "admin")


class MyKeyListApi(_KeyListBase):
    permission_classes = [IsActiveUser]

    @_ME["list"]
    def get(self, request):
        return super().get(request)

    @_ME["create"]
    def post(self, request):
        return super().post(request)


class MyKeyDetailApi(_KeyDetailBase):
    permission_classes = [IsActiveUser]

    @_ME["get"]
    def get(self, request, key_id: int):
        return super().get(request, key_id)

    @_ME["patch"]
    def patch(self, request, key_id: int):
        return super().patch(request, key_id)


class MyKeyRevokeApi(_KeyRevokeBase):
    permission_classes = [IsActiveUser]

    @_ME["revoke"]
    def post(self, request, key_id: int):
        return super().post(request, key_id)


class MyKeyRegenerateApi(_KeyRegenerateBase):
    permission_classes = [IsActiveUser]

    @_ME["regenerate"]
    def post(self, request, key_id: int):
        return super().post(request, key_id)


class _AdminScope:
    permission_classes = [IsStaff]

    def owner(self, request) -> None:
        return None


class AdminKeyListApi(_AdminScope, _KeyListBase):
    filter_serializer = AdminKeyFilterSerializer
    create_serializer = AdminKeyCreateSerializer

    @_ADMIN["list"]
    def get(self, request):
        return super().get(request)

    @_ADMIN["create"]
    def post(self, request):
        return super().post(request)


class AdminKeyDetailApi(_AdminScope, _KeyDetailBase):
    @_ADMIN["get"]
    def get(self, request, key_id: int):
        return super().get(request, key_id)

    @_ADMIN["patch"]
    def patch(self, request, key_id: int):
        return super().patch(request, key_id)


class AdminKeyRevokeApi(_AdminScope, _KeyRevokeBase):
    @_ADMIN["revoke"]
    def post(self, request, key_id: int):
        return super().post(request, key_id)


class AdminKeyRegenerateApi(_AdminScope, _KeyRegenerateBase):
    @_ADMIN["regenerate"]
    def post(self, request, key_id: int):
        return super().post(request, key_id)
