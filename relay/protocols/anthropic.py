"""The Anthropic dialect: ``{"type": "error", "error": {type, message}}`` and named events."""

from __future__ import annotations

import orjson

from providers.formats.anthropic_messages import anthropic_error, anthropic_error_event

from ..errors import RelayError
from . import Protocol


class AnthropicProtocol(Protocol):
    def error_body(self, exc: RelayError) -> bytes:
        return orjson.dumps(anthropic_error(exc.status, exc.message))

    def stream_error(self, message: str) -> bytes:
        return anthropic_error_event(502, message)


ANTHROPIC = AnthropicProtocol("anthropic", "AnthropicError")


ROLES = ("user", "assistant", "system")


def _blocks(value, *, empty: bool = False, typed: bool = True) -> bool:
    """An array of objects (each with a string ``type`` when ``typed``)."""
    if not isinstance(value, list) or (not value and not empty):
        return False
    return all(isinstance(b, dict) and (not typed or isinstance(b.get("type"), str)) for b in value)


def check_messages(body: dict, *, count_only: bool = False) -> None:
    """The Messages fields the gateway reads itself, type-checked, in Anthropic's words.
    ``role: "system"`` is accepted anywhere after the first message (Anthropic's
    mid-conversation system messages)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RelayError(400, "messages: field required (a non-empty array)", param="messages")
    if not count_only:
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise RelayError(400, "max_tokens: field required (a positive integer)", param="max_tokens")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise RelayError(
                400, f"messages.{index}.role: must be 'user', 'assistant' or 'system'", param="messages"
            )
        content = message.get("content")
        if not isinstance(content, str) and not _blocks(content):
            raise RelayError(
                400,
                f"messages.{index}.content: must be a string or an array of content blocks",
                param="messages",
            )
    if messages[0].get("role") == "system":
        raise RelayError(
            400,
            "messages.0.role: the first message may not be a system message; use 'system'",
            param="system",
        )
    system = body.get("system")
    if system is not None and not isinstance(system, str) and not _blocks(system, empty=True):
        raise RelayError(400, "system: must be a string or an array of text blocks", param="system")
    tools = body.get("tools")
    if tools is not None and not _blocks(tools, empty=True, typed=False):
        raise RelayError(400, "tools: must be an array of objects", param="tools")
    sequences = body.get("stop_sequences")
    if sequences is not None and not isinstance(sequences, list):
        raise RelayError(400, "stop_sequences: must be an array", param="stop_sequences")
    sequences = body.get("stop_sequences") or ()
    if any(not isinstance(s, str) for s in sequences):
        raise RelayError(400, "stop_sequences: must be an array of strings", param="stop_sequences")
    for name in ("thinking", "tool_choice", "metadata"):
        value = body.get(name)
        if value is not None and not isinstance(value, dict):
            raise RelayError(400, f"{name}: must be an object", param=name)


# --- OpenAPI: the shapes this module answers with ------------------------------------

SCHEMAS: dict[str, dict] = {
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
}
