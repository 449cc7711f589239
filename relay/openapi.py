"""The relay's OpenAPI, made from the endpoint declarations (``relay.routes.ENDPOINTS``):
each endpoint's :class:`Doc`, its protocol's error shape, and the schemas its module
declares in ``SCHEMAS``. drf-spectacular merges it into /api/schema/ (the hook in
``gateway_project.schema``), so /api/docs/ shows every relay path."""

from __future__ import annotations

import copy

REF = "#/components/schemas/"
OPEN = {"type": "object", "additionalProperties": True}
ERRORS = (400, 401, 402, 403, 404, 413, 429, 500, 502, 503, 504)
ERROR_TEXT = {
    400: "The request is invalid.",
    401: "Missing, unknown, revoked or expired API key.",
    402: "Balance or key budget exhausted.",
    403: "Account inactive, model not allowed for this key, or client IP not allowed.",
    404: "Unknown model (or one this key may not use).",
    405: "Method not allowed.",
    409: "The object is in use and cannot be deleted.",
    413: "Request body too large.",
    429: "Rate limit, concurrency limit or quota exceeded, or too many failed logins (see Retry-After).",
    500: "The gateway failed.",
    502: "Every provider tried failed.",
    503: "No provider is available for this model, or a dependency is down (see Retry-After).",
    504: "The provider timed out.",
}
SSE = {
    "text/event-stream": {
        "schema": {"type": "string", "description": "Server-sent events in the endpoint's protocol."}
    }
}
SECURITY = [{"relayKey": []}, {"relayKeyHeader": []}]


def ref(name: str) -> dict:
    return {"$ref": REF + name}


def json_response(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def operation(endpoint) -> dict:
    doc = endpoint.doc
    ok = json_response(ref(doc.response), doc.response_text)
    if doc.stream:
        ok["content"].update(copy.deepcopy(SSE))
        ok["description"] += " With `stream: true`, server-sent events."
    error = ref(endpoint.protocol.error_schema)
    codes = ERRORS if endpoint.authenticated else (500,)
    result = {
        "operationId": doc.operation_id,
        "tags": [doc.tag],
        "summary": doc.summary,
        "description": doc.description,
        "responses": {"200": ok, **{str(code): json_response(error, ERROR_TEXT[code]) for code in codes}},
    }
    result["security"] = SECURITY if endpoint.authenticated else []
    if doc.request:
        result["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(doc.request)}},
        }
    if doc.parameters:
        result["parameters"] = copy.deepcopy(list(doc.parameters))
    return result


def paths(endpoints) -> dict:
    out: dict[str, dict] = {}
    for endpoint in endpoints:
        if endpoint.doc is None:
            continue
        path = endpoint.doc.path or endpoint.path
        out.setdefault(path, {})[endpoint.method.lower()] = operation(endpoint)
    return out


def schemas(modules, protocols) -> dict:
    out: dict[str, dict] = {}
    for holder in (*protocols, *modules):
        out.update(getattr(holder, "SCHEMAS", {}))
    return out


# the non-standard request field of chat completions, completions and messages
WEB_SEARCH_FIELD = {
    "type": "boolean",
    "default": False,
    "description": "Gateway extension (never forwarded): the gateway searches the web for the model "
    "and cites the pages it used (docs/web-search.md).",
}
