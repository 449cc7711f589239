"""Accounts API: JWT auth under /auth/ and the staff user endpoints under /api/admin/users/."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import authenticate, update_session_auth_hash
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from billing.apis import LedgerEntrySerializer
from billing.models import BillingRecord
from core.api import (
    IdField,
    IsActiveUser,
    IsStaff,
    ListQuerySerializer,
    LoginLimiter,
    MoneyField,
    body,
    ordering_field,
    paginated,
    paginated_response,
    query,
)
from core.web import client_ip
from jwtauth.services import token_pair_issue, token_refresh, token_session_end

from . import services
from .models import PriceGroup, User
from .selectors import user_can_authenticate, user_get, user_list
from .services import BalanceError, user_adjust_balance

AUTH_TAG = ["auth"]
ADMIN_TAG = ["admin: users"]
LOGIN_FAILED = "No active account found with the given credentials"


# --- serializers -----------------------------------------------------------------------------


class ProfileSerializer(serializers.ModelSerializer):
    email = serializers.CharField(read_only=True, help_text="May be empty.")
    balance = MoneyField(read_only=True)
    credit_limit = MoneyField(read_only=True)
    group = serializers.CharField(source="group.name", read_only=True, allow_null=True)

    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "email",
            "full_name",
            "status",
            "is_staff",
            "balance",
            "credit_limit",
            "group",
            "date_joined",
            "last_login",
        ]
        read_only_fields = fields


class ProfileUpdateSerializer(serializers.Serializer):
    email = serializers.EmailField(required=False, allow_blank=True, max_length=254)
    full_name = serializers.CharField(required=False, allow_blank=True, max_length=150)


class RegisterSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    email = serializers.EmailField(required=False, allow_blank=True, max_length=254, default="")
    full_name = serializers.CharField(required=False, allow_blank=True, max_length=150, default="")
    password = serializers.CharField(write_only=True, max_length=4096, trim_whitespace=False)


class LoginSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(write_only=True, max_length=4096, trim_whitespace=False)


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField(help_text="JWT for the Authorization: Bearer header.")
    refresh = serializers.CharField(help_text="Single-use: /auth/refresh returns a new one.")


class RefreshSerializer(serializers.Serializer):
    refresh = serializers.CharField(max_length=4096)


class ChangePasswordSerializer(serializers.Serializer):
    old_password = serializers.CharField(write_only=True, max_length=4096, trim_whitespace=False)
    new_password = serializers.CharField(write_only=True, max_length=4096, trim_whitespace=False)


class AdminUserSerializer(serializers.ModelSerializer):
    email = serializers.CharField(read_only=True, help_text="May be empty.")
    balance = MoneyField(read_only=True)
    credit_limit = MoneyField(read_only=True)
    group_name = serializers.CharField(source="group.name", read_only=True, allow_null=True)

    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "email",
            "full_name",
            "status",
            "is_active",
            "is_staff",
            "is_superuser",
            "balance",
            "credit_limit",
            "group",
            "group_name",
            "date_joined",
            "last_login",
            "updated_at",
        ]
        read_only_fields = fields


class _AdminUserWriteSerializer(serializers.Serializer):
    email = serializers.EmailField(required=False, allow_blank=True, max_length=254)
    full_name = serializers.CharField(required=False, allow_blank=True, max_length=150)
    is_staff = serializers.BooleanField(required=False)
    credit_limit = MoneyField(required=False, min_value=0)
    group = IdField(required=False, allow_null=True, help_text="Price group id; null for none.")

    def validate_group(self, value):
        if value is None:
            return None
        group = PriceGroup.objects.filter(pk=value).first()
        if group is None:
            raise serializers.ValidationError("No such price group.")
        return group


class AdminUserCreateSerializer(_AdminUserWriteSerializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(
        required=False,
        allow_blank=True,
        write_only=True,
        max_length=4096,
        trim_whitespace=False,
        help_text="Empty: the account cannot log in until a password is set.",
    )


class AdminUserUpdateSerializer(_AdminUserWriteSerializer):
    pass


class UserFilterSerializer(ListQuerySerializer):
    status = serializers.ChoiceField(choices=User.Status.choices, required=False)
    is_staff = serializers.BooleanField(required=False, allow_null=True, default=None)
    group = IdField(required=False)
    search = serializers.CharField(required=False, max_length=150, help_text="Username, email or name.")
    ordering = ordering_field("id", "username", "date_joined", "balance", "last_login", default="id")


class BalanceAdjustmentSerializer(serializers.Serializer):
    amount = MoneyField(help_text="Positive adds credit, negative deducts; not zero.")
    kind = serializers.ChoiceField(
        choices=[BillingRecord.Kind.TOPUP, BillingRecord.Kind.ADJUSTMENT, BillingRecord.Kind.REFUND],
        default=BillingRecord.Kind.ADJUSTMENT,
    )
    description = serializers.CharField(required=False, allow_blank=True, max_length=255, default="")

    def validate_amount(self, value):
        if value == 0:
            raise serializers.ValidationError("The amount must not be zero.")
        return value


# --- auth ------------------------------------------------------------------------------------


class PublicApi(APIView):
    """Endpoints used before there is a token: no authentication (so no CSRF either)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get_authenticate_header(self, request):
        return 'Bearer realm="api"'


class RegisterThrottle(ScopedRateThrottle):
    scope_attr = "throttle_scope"

    def get_ident(self, request):
        return client_ip(request.META)


class RegisterApi(PublicApi):
    throttle_classes = [RegisterThrottle]
    throttle_scope = "register"

    @extend_schema(
        tags=AUTH_TAG,
        summary="Create an account (when ALLOW_REGISTRATION is on)",
        request=RegisterSerializer,
        responses={201: ProfileSerializer, 403: OpenApiResponse(description="Registration is closed.")},
    )
    def post(self, request):
        if not settings.ALLOW_REGISTRATION:
            raise exceptions.PermissionDenied("Registration is closed.")
        data = body(RegisterSerializer, request)
        user = services.user_sign_up(**data)
        return Response(ProfileSerializer(user).data, status=status.HTTP_201_CREATED)


class LoginApi(PublicApi):
    @extend_schema(
        tags=AUTH_TAG,
        summary="Log in: an access and a refresh token",
        description=(
            "An unknown user, a wrong password and an inactive account get the same 401. "
            "Failed logins are limited per client IP (20 a minute) and per username from one "
            "client IP (10 a minute): the next attempt gets 429 with Retry-After."
        ),
        request=LoginSerializer,
        responses={200: TokenPairSerializer},
    )
    def post(self, request):
        data = body(LoginSerializer, request)
        username = data["username"]
        attempt = LoginLimiter.begin(request.META, username)
        if attempt.wait is not None:
            raise exceptions.Throttled(wait=attempt.wait)
        user = authenticate(request._request, username=username, password=data["password"])
        if not user_can_authenticate(user):
            raise exceptions.AuthenticationFailed(LOGIN_FAILED, code="no_active_account")
        attempt.succeeded()
        return Response(token_pair_issue(user=user))


class RefreshApi(PublicApi):
    @extend_schema(
        tags=AUTH_TAG,
        summary="A new access token and a new refresh token (the old refresh token is used up)",
        request=RefreshSerializer,
        responses={200: TokenPairSerializer},
    )
    def post(self, request):
        data = body(RefreshSerializer, request)
        try:
            tokens = token_refresh(refresh=data["refresh"])
        except TokenError as exc:
            raise InvalidToken(str(exc)) from None
        return Response(tokens)


class LogoutApi(PublicApi):
    @extend_schema(
        tags=AUTH_TAG,
        summary="Log out: the session of this refresh token ends, its access tokens included",
        request=RefreshSerializer,
        responses={204: None},
    )
    def post(self, request):
        data = body(RefreshSerializer, request)
        try:
            token_session_end(refresh=data["refresh"])
        except TokenError as exc:
            raise InvalidToken(str(exc)) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProfileApi(APIView):
    permission_classes = [IsActiveUser]

    @extend_schema(tags=AUTH_TAG, summary="Your profile", responses={200: ProfileSerializer})
    def get(self, request):
        return Response(ProfileSerializer(request.user).data)

    @extend_schema(
        tags=AUTH_TAG,
        summary="Change your email or name",
        request=ProfileUpdateSerializer,
        responses={200: ProfileSerializer},
    )
    def patch(self, request):
        data = body(ProfileUpdateSerializer, request)
        user = services.user_update(user=request.user, data=data)
        return Response(ProfileSerializer(user).data)


class ChangePasswordApi(APIView):
    permission_classes = [IsActiveUser]

    @extend_schema(
        tags=AUTH_TAG,
        summary="Change your password; every other session ends",
        description="Returns a new token pair for this client: all tokens issued before stop working.",
        request=ChangePasswordSerializer,
        responses={200: TokenPairSerializer},
    )
    def post(self, request):
        data = body(ChangePasswordSerializer, request)
        user = request.user
        attempt = LoginLimiter.begin(request.META, user.username)
        if attempt.wait is not None:
            raise exceptions.Throttled(wait=attempt.wait)
        if not user.check_password(data["old_password"]):
            raise exceptions.ValidationError({"old_password": ["Your old password was entered incorrectly."]})
        user = services.user_change_password(user=user, new_password=data["new_password"])
        if isinstance(request.successful_authenticator, SessionAuthentication):
            update_session_auth_hash(request._request, user)  # keep this browser session
        return Response(token_pair_issue(user=user))


# --- staff: users ----------------------------------------------------------------------------


def get_user_or_404(user_id: int) -> User:
    user = user_get(user_id=user_id)
    if user is None:
        raise Http404("No such user.")
    return user


def _not_yourself(request, user: User, action: str) -> None:
    if user.pk == request.user.pk:
        raise exceptions.ValidationError(f"You cannot {action} your own account.")


class AdminUserListApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        tags=ADMIN_TAG,
        operation_id="api_admin_users_list",
        summary="Users",
        parameters=[UserFilterSerializer],
        responses={200: paginated(AdminUserSerializer)},
    )
    def get(self, request):
        users = user_list(filters=query(UserFilterSerializer, request))
        return paginated_response(
            request=request, view=self, queryset=users, serializer_class=AdminUserSerializer
        )

    @extend_schema(
        tags=ADMIN_TAG,
        summary="Create a user",
        request=AdminUserCreateSerializer,
        responses={201: AdminUserSerializer},
    )
    def post(self, request):
        data = body(AdminUserCreateSerializer, request)
        user = services.user_register(
            username=data["username"],
            password=data.get("password", ""),
            email=data.get("email", ""),
            full_name=data.get("full_name", ""),
            is_staff=data.get("is_staff", False),
            credit_limit=data.get("credit_limit", 0),
            group=data.get("group"),
        )
        return Response(AdminUserSerializer(user).data, status=status.HTTP_201_CREATED)


class AdminUserDetailApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(tags=ADMIN_TAG, summary="A user", responses={200: AdminUserSerializer})
    def get(self, request, user_id: int):
        return Response(AdminUserSerializer(get_user_or_404(user_id)).data)

    @extend_schema(
        tags=ADMIN_TAG,
        summary="Change a user",
        request=AdminUserUpdateSerializer,
        responses={200: AdminUserSerializer},
    )
    def patch(self, request, user_id: int):
        user = get_user_or_404(user_id)
        data = body(AdminUserUpdateSerializer, request)
        if "is_staff" in data and not data["is_staff"]:
            _not_yourself(request, user, "remove staff rights from")
        user = services.user_update(user=user, data=data, fields=services.ADMIN_FIELDS)
        return Response(AdminUserSerializer(user).data)

    @extend_schema(
        tags=ADMIN_TAG,
        summary="Delete a user (marked deleted, keys revoked; ledger and usage rows stay)",
        responses={204: None},
    )
    def delete(self, request, user_id: int):
        user = get_user_or_404(user_id)
        _not_yourself(request, user, "delete")
        services.user_delete(user=user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AdminUserSuspendApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        tags=ADMIN_TAG, summary="Suspend a user", request=None, responses={200: AdminUserSerializer}
    )
    def post(self, request, user_id: int):
        user = get_user_or_404(user_id)
        _not_yourself(request, user, "suspend")
        return Response(AdminUserSerializer(services.user_suspend(user=user)).data)


class AdminUserActivateApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        tags=ADMIN_TAG,
        summary="Reactivate a suspended user",
        request=None,
        responses={200: AdminUserSerializer},
    )
    def post(self, request, user_id: int):
        user = get_user_or_404(user_id)
        return Response(AdminUserSerializer(services.user_activate(user=user)).data)


class AdminBalanceAdjustmentApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        tags=ADMIN_TAG,
        summary="Adjust a user's balance (one ledger row)",
        request=BalanceAdjustmentSerializer,
        responses={201: LedgerEntrySerializer},
    )
    def post(self, request, user_id: int):
        user = get_user_or_404(user_id)
        data = body(BalanceAdjustmentSerializer, request)
        if abs(user.balance + data["amount"]) > 2 * 10**18:
            raise exceptions.ValidationError({"amount": ["The balance would leave the supported range."]})
        try:
            record = user_adjust_balance(
                user=user,
                amount=data["amount"],
                kind=data["kind"],
                description=data["description"],
                created_by=request.user,
            )
        except BalanceError as exc:
            raise exceptions.ValidationError({"amount": [str(exc)]}) from None
        return Response(LedgerEntrySerializer(record).data, status=status.HTTP_201_CREATED)
