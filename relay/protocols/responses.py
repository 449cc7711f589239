"""The OpenAI Responses dialect: OpenAI's ``{"error": {...}}`` bodies; a stream that breaks
off ends with a ``response.failed`` event (no ``data: [DONE]`` in this protocol)."""

from __future__ import annotations

from providers.formats.openai_responses import failed_event

from ..errors import RelayError
from .openai import OpenAIProtocol


class ResponsesProtocol(OpenAIProtocol):
    def stream_error(self, message: str) -> bytes:
        # the stream's translator sends its own response.failed (same id, next sequence
        # number); this bare one is the fallback when it cannot
        return failed_event(message)


RESPONSES = ResponsesProtocol("responses", "OpenAIError")


def _check_type(body: dict, name: str, kinds, what: str) -> None:
    value = body.get(name)
    if value is not None and not isinstance(value, kinds):
        raise RelayError(400, f"Invalid type for '{name}': expected {what}.", param=name, code="invalid_type")


def check_responses(body: dict, *, count_only: bool = False) -> None:
    """The Responses fields the gateway reads itself, type-checked in OpenAI's words (the
    rest is the upstream's to judge, or ignored: clients add fields of their own)."""
    value = body.get("input")
    if not count_only and (value is None or value == "" or value == []):
        raise RelayError(
            400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    _check_type(body, "input", (str, list), "a string or an array of input items")
    _check_type(body, "instructions", (str, list), "a string")
    _check_type(body, "tools", list, "an array")
    _check_type(body, "tool_choice", (str, dict), "a string or an object")
    for name in ("reasoning", "text", "metadata"):
        _check_type(body, name, dict, "an object")
    for name in ("store", "stream", "parallel_tool_calls", "background"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise RelayError(
                400, f"Invalid type for '{name}': expected a boolean.", param=name, code="invalid_type"
            )
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise RelayError(
            400, "Invalid type for 'previous_response_id': expected a string.", param="previous_response_id"
        )
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise RelayError(
            400, "Invalid 'max_output_tokens': expected a positive integer.", param="max_output_tokens"
        )
