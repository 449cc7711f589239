"""The server worker for production (`make serve`, the Docker image): uvicorn under gunicorn.

uvicorn trusts ``X-Forwarded-For`` from loopback peers by default and rewrites the client
address with it, so behind any same-host forwarder a client could choose its own IP for
key allow-lists, throttles and logs even with ``TRUST_X_FORWARDED_FOR=0``. Here the
server never rewrites it: the application alone reads the header, and only when
``TRUST_X_FORWARDED_FOR`` says so (relay.http.Context, core.api.client_ip).
"""

from __future__ import annotations

from uvicorn_worker import UvicornWorker as _UvicornWorker

# uvicorn.Config options every way of serving the gateway uses (gunicorn workers, make run,
# the tests' in-process server); the protocol joins a response's writes (gateway_project.server)
SERVER_OPTIONS = {"proxy_headers": False, "http": "gateway_project.server:HttpProtocol"}


class UvicornWorker(_UvicornWorker):
    CONFIG_KWARGS = {**_UvicornWorker.CONFIG_KWARGS, **SERVER_OPTIONS}
