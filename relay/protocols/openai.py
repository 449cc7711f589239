"""The OpenAI dialect: ``{"error": {message, type, param, code}}`` and ``data:`` events."""

from __future__ import annotations

import orjson

from ..errors import RelayError
from . import Protocol

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(status: int, message: str, *, type: str | None = None, code=None, param=None) -> bytes:
    kind = type or ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


class OpenAIProtocol(Protocol):
    def error_body(self, exc: RelayError) -> bytes:
        return error_body(exc.status, exc.message, type=exc.type, code=exc.code, param=exc.param)

    def stream_error(self, message: str) -> bytes:
        body = error_body(502, message, type="upstream_error", code="stream_interrupted")
        return b"data: " + body + b"\n\n"


OPENAI = OpenAIProtocol("openai", "OpenAIError")


def check_chat(body: dict) -> None:
    """The chat completion fields the gateway reads itself, type-checked (the rest is the
    upstream's to judge)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RelayError(
            400, "'messages' must be a non-empty array.", param="messages", code="missing_required_parameter"
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RelayError(
                400, f"messages[{index}] must be an object with a 'role'.", param=f"messages[{index}]"
            )
        calls = message.get("tool_calls")
        if calls is not None and not isinstance(calls, list):
            raise RelayError(
                400, f"messages[{index}].tool_calls must be an array.", param=f"messages[{index}].tool_calls"
            )
    n = body.get("n", 1)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128):
        raise RelayError(400, "'n' must be an integer between 1 and 128.", param="n")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise RelayError(400, f"'{name}' must be a positive integer.", param=name)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise RelayError(400, "'stream_options' must be an object.", param="stream_options")
    for name in ("tools", "stop"):
        value = body.get(name)
        if name == "stop" and isinstance(value, str):
            continue
        if value is not None and not isinstance(value, list):
            raise RelayError(400, f"'{name}' must be an array.", param=name)


def include_usage(body: dict, stream: bool) -> bool:
    return stream and bool((body.get("stream_options") or {}).get("include_usage"))


# --- OpenAPI: the shapes this module answers with ------------------------------------

SCHEMAS: dict[str, dict] = {
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
}
