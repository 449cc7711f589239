"""/auth/: register, log in, refresh, log out, profile, change password (JWT)."""

from django.urls import path

from . import apis

app_name = "auth"

urlpatterns = [
    path("register", apis.RegisterApi.as_view(), name="register"),
    path("login", apis.LoginApi.as_view(), name="login"),
    path("refresh", apis.RefreshApi.as_view(), name="refresh"),
    path("logout", apis.LogoutApi.as_view(), name="logout"),
    path("profile", apis.ProfileApi.as_view(), name="profile"),
    path("change-password", apis.ChangePasswordApi.as_view(), name="change-password"),
]
