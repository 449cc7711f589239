"""ASGI entry point: relay paths go to the relay's own app, the rest to Django.

Django's request handler costs more than the whole upstream hop (docs/architecture.md),
so ``/v1/`` and ``/mj/`` never pass through it (nor ``/``, the base URL clients probe).
Both apps share settings, models, caches.
"""

import asyncio
import importlib
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_app = get_asgi_application()  # runs django.setup()

from core.web import CONSOLE_PREFIXES  # noqa: E402
from relay.app import RelayApp  # noqa: E402

relay_app = RelayApp()
RELAY_PREFIXES = ("/v1/", "/mj/", "/mj-fast/", "/mj-relax/", "/mj-turbo/")
CONSOLE_URLCONF = "gateway_project.console_urls"


async def application(scope, receive, send):
    if scope["type"] == "http" and (scope["path"].startswith(RELAY_PREFIXES) or scope["path"] == "/"):
        await relay_app(scope, receive, send)
    elif scope["type"] == "lifespan":
        await relay_app.lifespan(scope, receive, send)
    else:
        if CONSOLE_URLCONF not in sys.modules and scope.get("path", "").startswith(CONSOLE_PREFIXES):
            # the console's first request in this worker: its modules (~0.3 s of imports) are
            # loaded in a thread, not by Django's URL resolver on the event loop, which would
            # hold up every stream the worker serves meanwhile (gateway_project.urls)
            await asyncio.to_thread(importlib.import_module, CONSOLE_URLCONF)
        await django_app(scope, receive, send)
