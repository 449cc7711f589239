"""Endpoint families of the relay: one module each, each declaring its ``ENDPOINTS``.

An :class:`Endpoint` says where it is served (path, method), in which protocol (error
and stream shapes), and what runs it:

* ``prepare`` for billable calls to an upstream: it validates the body and returns the
  :class:`relay.forward.Call` plus the candidate routes; the shared pipeline
  (``relay.pipeline``) does the rest (limits and reservation, forwarding with failover,
  the one usage event);
* ``handle`` for everything else (catalogue, reports, token counting): it answers itself.

``relay.routes`` builds the route table from the modules it lists; adding an endpoint
family is a new module plus one line there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..protocols import Protocol


@dataclass(frozen=True, slots=True)
class Doc:
    """How the endpoint appears in the OpenAPI schema (``relay.openapi``)."""

    operation_id: str
    summary: str
    tag: str
    response: str  # a schema name from the module's SCHEMAS
    response_text: str
    request: str | None = None
    stream: bool = False  # answers server-sent events with ``stream: true``
    description: str = ""
    parameters: tuple[dict, ...] = ()
    path: str | None = None  # the templated path, for prefix endpoints


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str  # exact, or a prefix ending in "/" when ``prefix`` is set
    method: str
    protocol: Protocol
    request_type: str = ""  # the usage log's request type (billable endpoints)
    prepare: Callable[..., Awaitable] | None = None  # billable: (ctx, raw, record) -> (Call, routes)
    handle: Callable[..., Awaitable] | None = None  # other: (ctx) -> None, answers itself
    authenticated: bool = True
    prefix: bool = False  # ``path`` is a prefix; the rest of the path is the handler's argument
    also: tuple[str, ...] = field(default=())  # further methods served the same way (HEAD)
    doc: Doc | None = None
