"""OpenAPI: the parts DRF does not generate.

The relay (``/v1/*``) is a raw ASGI app, not DRF: its operations come from its endpoint
declarations (``relay.openapi``) and are merged into the generated schema by this
drf-spectacular postprocessing hook, together with the error responses every management
endpoint can give (DRF's format).
"""

from __future__ import annotations

from relay import openapi
from relay.protocols import anthropic, midjourney, openai
from relay.routes import ENDPOINTS, MODULES

REF = openapi.REF

MANAGEMENT_SCHEMAS: dict[str, dict] = {
    "DRFError": {
        "type": "object",
        "description": "DRF's error format: `detail` for most errors, or field -> list of messages "
        "(`non_field_errors` for the whole input) for validation errors.",
        "additionalProperties": True,
        "properties": {"detail": {"type": "string"}},
    },
}

SECURITY_SCHEMES = {
    "relayKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A gateway API key (sk-gw-...) for /v1/*: `Authorization: Bearer KEY`.",
    },
    "relayKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "The same API key in Anthropic's header (mj-api-secret works too).",
    },
}

TAG_ORDER = (
    ("auth", "Register, log in (JWT), refresh, log out, profile, password."),
    ("me: keys", "Your API keys: the plain key is shown once, at creation."),
    ("me: usage and billing", "Your usage, ledger, balance, quotas, models and prices; redeem codes."),
    ("relay: OpenAI", "OpenAI-compatible data plane (API key)."),
    ("relay: Anthropic", "Anthropic-compatible data plane (API key)."),
    ("relay: models", "Models a key may call, and the gateway's base URL."),
    ("relay: usage", "The key's own usage and balance (API key)."),
    ("admin: users", "Staff: accounts and balance adjustments."),
    ("admin: keys", "Staff: every user's API keys."),
    ("admin: providers", "Staff: upstream providers; credentials are write-only."),
    ("admin: models", "Staff: the models clients ask for."),
    ("admin: routes", "Staff: which provider serves which model."),
    ("admin: prices", "Staff: price versions."),
    ("admin: quotas", "Staff: quotas on users and keys."),
    ("admin: usage and ledger", "Staff: usage logs and the ledger of everyone."),
    ("admin: redemption codes", "Staff: prepaid codes."),
)

_MANAGEMENT_ERRORS = {
    400: "Invalid input (DRF's format: field -> messages).",
    401: "Not authenticated, or the token is invalid, expired or revoked.",
    403: "Not allowed (staff only, inactive account, or registration closed).",
    404: "Not found (or not yours).",
    415: "The request body's media type is not one the endpoint parses (send JSON).",
    429: "Too many requests (see Retry-After).",
}


def add_relay_and_errors(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS['POSTPROCESSING_HOOKS'])."""
    components = result.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    relay_schemas = openapi.schemas(MODULES, (openai, anthropic, midjourney))
    for name, schema in {**relay_schemas, **MANAGEMENT_SCHEMAS}.items():
        schemas.setdefault(name, schema)
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)

    error = {"description": "", "content": {"application/json": {"schema": openapi.ref("DRFError")}}}
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            codes = [400, 401, 403, 404, 429]
            if method == "delete":
                codes.append(409)
            if "requestBody" in operation:
                codes.append(415)
            for code in codes:
                text = _MANAGEMENT_ERRORS.get(code) or openapi.ERROR_TEXT[code]
                responses.setdefault(str(code), {**error, "description": text})
    result.setdefault("paths", {}).update(openapi.paths(ENDPOINTS))
    result["tags"] = [{"name": name, "description": text} for name, text in TAG_ORDER]
    return result
