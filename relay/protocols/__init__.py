"""Inbound dialects: how an endpoint family validates requests, shapes its errors and
ends a failed stream. An endpoint names its protocol; the pipeline renders every error
through it, so no other module writes an error shape."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RelayError


@dataclass(frozen=True, slots=True)
class Protocol:
    name: str
    error_schema: str  # its error shape's name in the OpenAPI schema

    def error_body(self, exc: RelayError) -> bytes:
        raise NotImplementedError

    def stream_error(self, message: str) -> bytes:
        """The last bytes of a stream the upstream broke off, in this protocol."""
        raise NotImplementedError
