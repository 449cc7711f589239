"""JSON-lines logging with a request id carried in a context variable.

Django takes the id from ``X-Request-ID`` when the client sends a sane one, otherwise it
makes a new one; the relay always makes its own, since there the id is the request's
billing key (settlement charges each id once). Both send it back in ``X-Request-ID``.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import re
import time

import orjson

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def new_request_id(incoming: str | None = None) -> str:
    if incoming and _VALID_ID.match(incoming):
        return incoming
    return f"{_ID_PREFIX[0]}{next(_ID_COUNTER):016x}"


# request ids: 64 random bits per process (drawn again in a forked child) and a counter,
# 32 hex characters like uuid4().hex; unique without a system call per request
_ID_PREFIX = [os.urandom(8).hex()]
_ID_COUNTER = itertools.count(1)


def _new_id_prefix() -> None:
    global _ID_COUNTER
    _ID_PREFIX[0] = os.urandom(8).hex()
    _ID_COUNTER = itertools.count(1)


os.register_at_fork(after_in_child=_new_id_prefix)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "request_id"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", request_id_var.get()),
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class RequestIdMiddleware:
    """Django side: tag every log line of a request and echo the id to the client."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        rid = new_request_id(request.headers.get("X-Request-ID"))
        token = request_id_var.set(rid)
        request.request_id = rid
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = rid
        return response
