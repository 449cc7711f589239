from django.urls import path

from . import views

app_name = "dashboard"

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.DashboardLoginView.as_view(), name="login"),
    path("logout/", views.DashboardLogoutView.as_view(), name="logout"),
    path("signup/", views.signup, name="signup"),
    path("keys/", views.keys, name="keys"),
    path("keys/<id:key_id>/revoke/", views.key_revoke, name="key-revoke"),
    path("keys/<id:key_id>/regenerate/", views.key_regenerate, name="key-regenerate"),
    path("usage/", views.usage, name="usage"),
    path("billing/", views.billing, name="billing"),
    path("models/", views.models, name="models"),
    path("images/", views.mj_tasks, name="mj-tasks"),
    path("images/<str:task_id>/image", views.mj_image, name="mj-image"),
]
