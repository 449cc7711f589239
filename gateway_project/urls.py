from django.contrib import admin
from django.urls import path

from . import health

admin.site.site_header = "AI gateway operator console"
admin.site.site_title = "AI gateway"
admin.site.index_title = "Operations"

urlpatterns = [
    path("health", health.health, name="health"),
    path("health/ready", health.ready, name="health-ready"),
    path("admin/", admin.site.urls),
]
