"""The relay's route table, built from the endpoint modules listed here (one line each)."""

from __future__ import annotations

from .endpoints import (
    Endpoint,
    chat_completions,
    completions,
    messages,
    midjourney,
    models,
    reports,
    responses,
    root,
)
from .errors import RelayError

MODULES = (chat_completions, completions, messages, midjourney, models, reports, responses, root)

ENDPOINTS: list[Endpoint] = [endpoint for module in MODULES for endpoint in module.ENDPOINTS]


class RouteTable:
    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.exact: dict[str, dict[str, Endpoint]] = {}
        self.prefixes: list[tuple[str, dict[str, Endpoint]]] = []
        for endpoint in endpoints:
            if endpoint.prefix:
                methods = next((m for p, m in self.prefixes if p == endpoint.path), None)
                if methods is None:
                    methods = {}
                    self.prefixes.append((endpoint.path, methods))
            else:
                methods = self.exact.setdefault(endpoint.path, {})
            for method in (endpoint.method, *endpoint.also):
                methods[method] = endpoint

    def match(self, method: str, path: str) -> Endpoint:
        methods = self.exact.get(path)
        if methods is None:
            methods = next((m for prefix, m in self.prefixes if path.startswith(prefix)), None)
        if methods is None:
            raise RelayError(404, f"Unknown endpoint {method} {path}.", code="unknown_url")
        endpoint = methods.get(method)
        if endpoint is None:
            allowed = ", ".join(sorted(methods))
            raise RelayError(405, f"Use {allowed} for {path}.", headers=[(b"allow", allowed.encode())])
        return endpoint

    def protocol_for(self, path: str):
        """The protocol of the endpoint family at ``path`` (errors before matching)."""
        methods = self.exact.get(path) or next((m for p, m in self.prefixes if path.startswith(p)), None)
        return next(iter(methods.values())).protocol if methods else None


TABLE = RouteTable(ENDPOINTS)
