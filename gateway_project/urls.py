"""The root URLconf: the probes, then everything else through a resolver that imports
``gateway_project.console_urls`` on the first request that needs it.

The relay never passes through Django (gateway_project.asgi), and the probes (``/health``,
``/health/ready``, ``/metrics``) are answered here without loading the management API:
DRF, the admin's views, drf-spectacular and the console are ~25 MB of a worker's memory,
which a worker that serves only relay traffic and probes never pays (docs/decisions.md,
"Per-worker memory").
"""

from django.urls import URLResolver, path
from django.urls.resolvers import RoutePattern

from observability import views as observability_views

from . import health

handler404 = "core.api.not_found"

urlpatterns = [
    path("health", health.health, name="health"),
    path("health/ready", health.ready, name="health-ready"),
    path("metrics", observability_views.metrics, name="metrics"),
    # include() would import the module now; a resolver given the module's name imports it
    # when a path first reaches it (URLResolver.urlconf_module is computed on first use)
    URLResolver(RoutePattern("", is_endpoint=False), "gateway_project.console_urls"),
]
