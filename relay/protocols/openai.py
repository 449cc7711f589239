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


def _objects(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


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
        if calls is not None and not _objects(calls):
            raise RelayError(
                400,
                f"messages[{index}].tool_calls must be an array of objects.",
                param=f"messages[{index}].tool_calls",
            )
        content = message.get("content")
        if not (content is None or isinstance(content, str) or _objects(content)):
            raise RelayError(
                400,
                f"messages[{index}].content must be a string or an array of content parts.",
                param=f"messages[{index}].content",
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
    tools = body.get("tools")
    if tools is not None and not _objects(tools):
        raise RelayError(400, "'tools' must be an array of objects.", param="tools")
    stop = body.get("stop")
    if not (
        stop is None
        or isinstance(stop, str)
        or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise RelayError(400, "'stop' must be a string or an array of strings.", param="stop")


def check_stop(body: dict) -> None:
    stop = body.get("stop")
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise RelayError(400, "'stop' must be a string or an array of strings.", param="stop")


def check_embedding_input(value) -> None:
    """A string, or an array of strings, of token ids, or of token-id arrays."""
    ok = isinstance(value, str) and value
    if isinstance(value, list) and value:
        ok = (
            all(isinstance(v, str) for v in value)
            or all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value)
        )
    if not ok:
        raise RelayError(
            400, "'input' must be a non-empty string or array (of strings or token ids).", param="input"
        )


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
