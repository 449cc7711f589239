"""The relay's database calls: a sync ORM function run in a worker thread with the
connection care Django gives every request.

Django retires dead and over-age connections when a request starts and when it finishes
(``close_old_connections`` on request_started/request_finished). The relay never fires
those signals, so a connection broken by a PostgreSQL restart stayed in its thread for good
and every later load answered 500 "the connection is closed" until the gateway restarted.
``db_async`` wraps a loader so that each call:

- retires this thread's dead or over-age connections before and after (as Django does),
  and has the connection pool replace its idle connections that died;
- when the connection it held breaks (server restarted, network cut), drops it and retries
  once on a new one;
- when the database cannot be reached, raises :class:`DatabaseUnavailable`: a 503 with
  Retry-After, rendered in the endpoint's own error shape. A connect attempt is bounded by
  ``DB_CONNECT_TIMEOUT``; after a failed one, calls fail at once for ``FAIL_FAST`` seconds,
  since loads queue on one thread and each would otherwise wait the whole timeout in turn.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, connections

from .errors import RelayError

logger = logging.getLogger(__name__)

MESSAGE = "The gateway's database is unavailable; retry shortly."
RETRY_AFTER = 5  # seconds; what a client is told to wait when the database is unavailable
FAIL_FAST = 1.0  # seconds after a failed connect during which calls fail without trying

_down_until = 0.0  # monotonic time until which calls fail at once


class DatabaseUnavailable(RelayError):
    def __init__(self) -> None:
        super().__init__(
            503,
            MESSAGE,
            type="api_error",
            code="database_unavailable",
            headers=[(b"retry-after", str(RETRY_AFTER).encode())],
        )


def _retire(*, broken: bool = False) -> None:
    """``close_old_connections()`` for this thread (``broken``: close whatever their state).
    A connection inside a caller's transaction is left alone: not ours to end."""
    for conn in connections.all(initialized_only=True):
        if conn.in_atomic_block:
            continue
        try:
            if broken:
                conn.close()
            else:
                conn.close_if_unusable_or_obsolete()
        except Exception:  # closing a dead connection can fail too; it is dropped anyway
            with contextlib.suppress(Exception):
                conn.close()


def _purge_pools() -> None:
    """Have the pools check their idle connections (an empty query each) and replace the
    dead ones. Left to the pool, each connection that died with a restarted server costs
    the caller that draws it a failed check and a back-off sleep (1 s, 2 s, 4 s...), so the
    first loads after a restart would wait seconds or time out. Loads are rare (steady
    state makes no query), so they can afford this on every call."""
    for conn in connections.all():
        pool = getattr(conn, "pool", None)  # PostgreSQL with DB_POOL_MAX > 0 only
        if pool is not None:
            with contextlib.suppress(Exception):  # not open yet, or closing
                pool.check()


def reset_connections() -> None:
    """After a database error: drop this thread's connections and the pools' dead ones."""
    _retire(broken=True)
    _purge_pools()


def _held() -> bool:
    return any(conn.connection is not None for conn in connections.all(initialized_only=True))


def _unavailable(exc: Exception) -> DatabaseUnavailable:
    global _down_until
    _down_until = time.monotonic() + FAIL_FAST
    logger.warning("database unavailable", extra={"error": f"{type(exc).__name__}: {str(exc)[:200]}"})
    return DatabaseUnavailable()


def run(fn, *args, **kwargs):
    """Call ``fn`` (sync, in the current thread) with the care described above."""
    if time.monotonic() < _down_until:
        raise DatabaseUnavailable()
    _retire()
    _purge_pools()
    try:
        try:
            return fn(*args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            if not _held():  # the connect itself failed: the database is not there
                raise _unavailable(exc) from exc
            logger.warning(
                "database connection broken; retrying once on a new one",
                extra={"error": f"{type(exc).__name__}: {str(exc)[:200]}"},
            )
            reset_connections()
        try:
            return fn(*args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            raise _unavailable(exc) from exc
    finally:
        _retire()


def db_async(fn, *, thread_sensitive: bool = True):
    """``fn`` as a coroutine function run by ``sync_to_async`` through :func:`run`."""
    return sync_to_async(functools.partial(run, fn), thread_sensitive=thread_sensitive)


async def db_call(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` once, like ``await db_async(fn)(*args, **kwargs)``."""
    return await db_async(fn)(*args, **kwargs)
