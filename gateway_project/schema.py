"""OpenAPI: the parts DRF does not generate.

The relay (``/v1/*``) is a raw ASGI app, not DRF, so its operations are written
here by hand and merged into the generated schema by a drf-spectacular postprocessing hook,
together with the error responses every management endpoint can give (DRF's format).
Keep these in step with ``relay/app.py`` and ``relay/handlers.py``.
"""

from __future__ import annotations

import copy

REF = "#/components/schemas/"


def _ref(name: str) -> dict:
    return {"$ref": REF + name}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_OPEN = {"type": "object", "additionalProperties": True}

RELAY_SCHEMAS: dict[str, dict] = {
    "OpenAIError": {
        "type": "object",
        "description": "An error in OpenAI's format.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string", "example": "invalid_request_error"},
                    "param": {"type": "string", "nullable": True},
                    "code": {"type": "string", "nullable": True, "example": "invalid_api_key"},
                },
            }
        },
    },
    "AnthropicError": {
        "type": "object",
        "description": "An error in Anthropic's format (the /v1/messages endpoints).",
        "required": ["type", "error"],
        "properties": {
            "type": {"type": "string", "enum": ["error"]},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "ChatMessage": {
        "type": "object",
        "required": ["role"],
        "additionalProperties": True,
        "properties": {
            "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
            "content": {
                "nullable": True,
                "oneOf": [{"type": "string"}, {"type": "array", "items": _OPEN}],
            },
            "name": {"type": "string"},
            "tool_calls": {"type": "array", "items": _OPEN},
            "tool_call_id": {"type": "string"},
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "additionalProperties": True,
        "description": "OpenAI's chat completion request; unknown fields are passed upstream.",
        "properties": {
            "model": {"type": "string", "example": "gpt-4o-mini"},
            "messages": {"type": "array", "minItems": 1, "items": _ref("ChatMessage")},
            "stream": {"type": "boolean", "default": False},
            "stream_options": {
                "type": "object",
                "nullable": True,
                "properties": {"include_usage": {"type": "boolean"}},
            },
            "max_tokens": {"type": "integer", "minimum": 1, "nullable": True},
            "max_completion_tokens": {"type": "integer", "minimum": 1, "nullable": True},
            "temperature": {"type": "number", "nullable": True},
            "top_p": {"type": "number", "nullable": True},
            "tools": {"type": "array", "items": _OPEN},
            "tool_choice": {"oneOf": [{"type": "string"}, _OPEN]},
            "response_format": _OPEN,
            "user": {"type": "string"},
        },
    },
    "Usage": {
        "type": "object",
        "additionalProperties": True,
        "properties": {
            "prompt_tokens": {"type": "integer"},
            "completion_tokens": {"type": "integer"},
            "total_tokens": {"type": "integer"},
        },
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "choices"],
        "additionalProperties": True,
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["chat.completion"]},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": True,
                    "properties": {
                        "index": {"type": "integer"},
                        "message": _ref("ChatMessage"),
                        "finish_reason": {"type": "string", "nullable": True},
                    },
                },
            },
            "usage": _ref("Usage"),
        },
    },
    "CompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "additionalProperties": True,
        "properties": {
            "model": {"type": "string", "example": "gpt-3.5-turbo-instruct"},
            "prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "stream": {"type": "boolean", "default": False},
            "max_tokens": {"type": "integer", "minimum": 1, "nullable": True},
        },
    },
    "Completion": {
        "type": "object",
        "required": ["id", "object", "choices"],
        "additionalProperties": True,
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["text_completion"]},
            "choices": {"type": "array", "items": _OPEN},
            "usage": _ref("Usage"),
        },
    },
    "EmbeddingRequest": {
        "type": "object",
        "required": ["model", "input"],
        "additionalProperties": True,
        "properties": {
            "model": {"type": "string", "example": "text-embedding-3-small"},
            "input": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "array", "items": {"type": "integer"}},
                    {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
                ]
            },
            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
            "dimensions": {"type": "integer", "minimum": 1},
        },
    },
    "EmbeddingList": {
        "type": "object",
        "required": ["object", "data"],
        "additionalProperties": True,
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": _OPEN},
            "model": {"type": "string"},
            "usage": _ref("Usage"),
        },
    },
    "MessagesRequest": {
        "type": "object",
        "required": ["model", "messages", "max_tokens"],
        "additionalProperties": True,
        "description": "Anthropic's Messages request, for any model (translated for other providers).",
        "properties": {
            "model": {"type": "string", "example": "claude-3-5-sonnet-latest"},
            "max_tokens": {"type": "integer", "minimum": 1},
            "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": _OPEN}]},
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["role", "content"],
                    "additionalProperties": True,
                    "properties": {
                        "role": {"type": "string", "enum": ["user", "assistant"]},
                        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": _OPEN}]},
                    },
                },
            },
            "stream": {"type": "boolean", "default": False},
            "tools": {"type": "array", "items": _OPEN},
        },
    },
    "Message": {
        "type": "object",
        "required": ["id", "type", "role", "content"],
        "additionalProperties": True,
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string", "enum": ["message"]},
            "role": {"type": "string", "enum": ["assistant"]},
            "content": {"type": "array", "items": _OPEN},
            "model": {"type": "string"},
            "stop_reason": {"type": "string", "nullable": True},
            "usage": _OPEN,
        },
    },
    "TokenCount": {
        "type": "object",
        "required": ["input_tokens"],
        "properties": {"input_tokens": {"type": "integer"}},
    },
    "RelayModel": {
        "type": "object",
        "required": ["id", "object"],
        "properties": {
            "id": {"type": "string", "example": "gpt-4o-mini"},
            "object": {"type": "string", "enum": ["model"]},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
    },
    "RelayModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": _ref("RelayModel")},
        },
    },
    "DRFError": {
        "type": "object",
        "description": "DRF's error format: `detail` for most errors, or field -> list of messages "
        "(`non_field_errors` for the whole input) for validation errors.",
        "additionalProperties": True,
        "properties": {"detail": {"type": "string"}},
    },
}

_RELAY_ERRORS = (400, 401, 402, 403, 404, 413, 429, 500, 502, 503, 504)
_ERROR_TEXT = {
    400: "The request is invalid.",
    401: "Missing, unknown, revoked or expired API key.",
    402: "Balance or key budget exhausted.",
    403: "Account inactive, model not allowed for this key, or client IP not allowed.",
    404: "Unknown model (or one this key may not use).",
    409: "The object is in use and cannot be deleted.",
    413: "Request body too large.",
    429: "Rate limit, concurrency limit or quota exceeded, or too many failed logins (see Retry-After).",
    500: "The gateway failed.",
    502: "Every provider tried failed.",
    503: "No provider is available for this model.",
    504: "The provider timed out.",
}
_SSE = {
    "text/event-stream": {
        "schema": {"type": "string", "description": "Server-sent events, as the upstream sends them."}
    }
}


def _relay_op(
    operation_id: str,
    summary: str,
    *,
    tag: str,
    ok: dict,
    request: str | None = None,
    anthropic: bool = False,
    stream: bool = False,
    parameters: list | None = None,
    method_description: str = "",
) -> dict:
    error = _ref("AnthropicError" if anthropic else "OpenAIError")
    ok_response = copy.deepcopy(ok)
    if stream:
        ok_response["content"].update(_SSE)
        ok_response["description"] += " With `stream: true`, server-sent events."
    operation = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "description": method_description,
        "security": [{"relayKey": []}, {"relayKeyHeader": []}],
        "responses": {
            "200": ok_response,
            **{str(code): _json(error, _ERROR_TEXT[code]) for code in _RELAY_ERRORS},
        },
    }
    if request:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(request)}},
        }
    if parameters:
        operation["parameters"] = parameters
    return operation


def relay_paths() -> dict:
    openai_tag, anthropic_tag, models_tag, usage_tag = (
        "relay: OpenAI",
        "relay: Anthropic",
        "relay: models",
        "relay: usage",
    )
    dates = [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string", "format": "date"}}
        for name in ("start_date", "end_date")
    ]
    return {
        "/v1/chat/completions": {
            "post": _relay_op(
                "relay_chat_completions",
                "Chat completion (OpenAI-compatible, any provider)",
                tag=openai_tag,
                request="ChatCompletionRequest",
                ok=_json(_ref("ChatCompletion"), "The completion."),
                stream=True,
                method_description="Routed to a provider serving `model`, with failover; billed from the "
                "upstream's usage.",
            )
        },
        "/v1/completions": {
            "post": _relay_op(
                "relay_completions",
                "Text completion (legacy OpenAI)",
                tag=openai_tag,
                request="CompletionRequest",
                ok=_json(_ref("Completion"), "The completion."),
                stream=True,
            )
        },
        "/v1/embeddings": {
            "post": _relay_op(
                "relay_embeddings",
                "Embeddings",
                tag=openai_tag,
                request="EmbeddingRequest",
                ok=_json(_ref("EmbeddingList"), "The embeddings."),
            )
        },
        "/v1/messages": {
            "post": _relay_op(
                "relay_messages",
                "Anthropic Messages, for any model",
                tag=anthropic_tag,
                request="MessagesRequest",
                ok=_json(_ref("Message"), "The message."),
                anthropic=True,
                stream=True,
            )
        },
        "/v1/messages/count_tokens": {
            "post": _relay_op(
                "relay_messages_count_tokens",
                "Count the input tokens of a Messages request (local estimate)",
                tag=anthropic_tag,
                request="MessagesRequest",
                ok=_json(_ref("TokenCount"), "The count."),
                anthropic=True,
            )
        },
        "/v1/models": {
            "get": _relay_op(
                "relay_models_list",
                "Models this key may call",
                tag=models_tag,
                ok=_json(_ref("RelayModelList"), "The models."),
            )
        },
        "/v1/models/{model}": {
            "get": _relay_op(
                "relay_models_retrieve",
                "One model",
                tag=models_tag,
                ok=_json(_ref("RelayModel"), "The model."),
                parameters=[{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
            )
        },
        "/v1/usage": {
            "get": _relay_op(
                "relay_usage",
                "This key's requests, tokens and cost per model over a period",
                tag=usage_tag,
                ok=_json(_ref("RelayUsage"), "The usage."),
                parameters=dates,
            )
        },
        "/v1/dashboard/billing/subscription": {
            "get": _relay_op(
                "relay_billing_subscription",
                "OpenAI-style billing subscription: hard_limit_usd minus usage is what is left",
                tag=usage_tag,
                ok=_json(_ref("BillingSubscription"), "The limits."),
            )
        },
        "/v1/dashboard/billing/usage": {
            "get": _relay_op(
                "relay_billing_usage",
                "OpenAI-style billing usage in cents (all time without dates)",
                tag=usage_tag,
                ok=_json(_ref("BillingUsage"), "The usage."),
                parameters=dates,
            )
        },
    }


_USAGE_TOTALS = {
    "type": "object",
    "properties": {
        **{name: {"type": "integer"} for name in (
            "requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens"
        )},
        "cost": {"type": "string", "description": "Decimal amount, e.g. 0.000021000"},
    },
}  # fmt: skip
RELAY_SCHEMAS.update(
    {
        "RelayUsage": {
            "type": "object",
            "properties": {
                "object": {"type": "string", "enum": ["usage"]},
                "key": {"type": "string", "description": "The key's prefix."},
                "start_date": {"type": "string", "format": "date"},
                "end_date": {"type": "string", "format": "date"},
                "currency": {"type": "string"},
                "total": _USAGE_TOTALS,
                "data": {
                    "type": "array",
                    "items": {"allOf": [_USAGE_TOTALS, {"properties": {"model": {"type": "string"}}}]},
                },
            },
        },
        "BillingSubscription": {
            "type": "object",
            "properties": {
                "object": {"type": "string", "enum": ["billing_subscription"]},
                "has_payment_method": {"type": "boolean"},
                "soft_limit_usd": {"type": "number"},
                "hard_limit_usd": {"type": "number"},
                "system_hard_limit_usd": {"type": "number"},
                "access_until": {"type": "integer"},
                "remaining_usd": {"type": "number"},
            },
        },
        "BillingUsage": {
            "type": "object",
            "properties": {"object": {"type": "string"}, "total_usage": {"type": "number"}},
        },
    }
)

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
    ("relay: models", "Models a key may call."),
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
    for name, schema in RELAY_SCHEMAS.items():
        schemas.setdefault(name, schema)
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)

    error = {"description": "", "content": {"application/json": {"schema": _ref("DRFError")}}}
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
                responses.setdefault(
                    str(code), {**error, "description": _MANAGEMENT_ERRORS.get(code) or _ERROR_TEXT[code]}
                )
    result.setdefault("paths", {}).update(relay_paths())
    result["tags"] = [{"name": name, "description": text} for name, text in TAG_ORDER]
    return result
