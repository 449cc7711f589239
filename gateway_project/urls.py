"""The root URLconf: the probes, then the console's paths through a resolver that imports
``gateway_project.console_urls`` on the first request that needs it.

The relay never passes through Django (gateway_project.asgi), and the probes (``/health``,
``/health/ready``, ``/metrics``) are answered here without loading the management API:
DRF, the admin's views, drf-spectacular and the console are ~25 MB of a worker's memory,
which a worker that serves only relay traffic and probes never pays (docs/decisions.md,
"Per-worker memory").
"""

from django.urls import URLResolver, path
from django.urls.exceptions import Resolver404
from django.urls.resolvers import RoutePattern

from core.web import CONSOLE_PREFIXES
from observability import views as observability_views

from . import health

handler404 = "core.web.not_found"


class ConsoleResolver(URLResolver):
    """``include()`` would import the console's URLconf now; a resolver given the module's
    name imports it when a path first reaches it (``URLResolver.urlconf_module`` is computed
    on first use). Only the console's own prefixes reach it, so a 404 for /favicon.ico or a
    scanner's probe does not load the console either. Reversing and the OpenAPI schema see
    an ordinary ``path("", include(...))``."""

    prefixes = tuple(prefix.lstrip("/") for prefix in CONSOLE_PREFIXES)

    def resolve(self, path):
        if not path.startswith(self.prefixes):
            raise Resolver404({"path": path, "tried": []})
        return super().resolve(path)


urlpatterns = [
    path("health", health.health, name="health"),
    path("health/ready", health.ready, name="health-ready"),
    path("metrics", observability_views.metrics, name="metrics"),
    ConsoleResolver(RoutePattern("", is_endpoint=False), "gateway_project.console_urls"),
]
