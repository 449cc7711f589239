"""The contract every provider adapter implements.

Adapters are pure translation: a client request (OpenAI chat-completions shape) goes in
and an :class:`UpstreamRequest` comes out; an upstream answer goes in and an OpenAI
shaped answer plus :class:`Usage` comes out. No I/O happens here: the relay owns HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # part of prompt_tokens that was served from the cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Target:
    """Where and how to reach one provider for one model."""

    base_url: str  # without trailing slash, e.g. https://api.openai.com/v1
    api_key: str
    upstream_model: str
    extra_headers: dict[str, str] = field(default_factory=dict)
    extra_params: dict[str, Any] = field(default_factory=dict)  # merged into the body
    api_version: str = ""  # azure api-version, anthropic-version


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


@dataclass(slots=True)
class UpstreamError:
    """An upstream failure classified for failover and for the client."""

    status: int
    message: str
    type: str = "upstream_error"
    retryable: bool = False  # move on to the next candidate
    disable: bool = False  # credentials or balance problem: auto-disable the provider


class StreamTranslator:
    """Turns upstream stream bytes into OpenAI chat.completion.chunk SSE bytes.

    ``feed`` receives raw bytes as they arrive (any split, lines may straddle calls) and
    returns the bytes to send to the client now (possibly ``b""``). ``close`` is called
    when the upstream ended; it returns trailing bytes (e.g. ``data: [DONE]``).
    ``usage`` holds the upstream's usage once seen; ``finished`` is True once the
    upstream sent its terminal event (a stream that ends without it was cut); ``error``
    is set when that terminal event was an error, which ``feed`` has already translated.
    """

    usage: Usage | None = None
    finished: bool = False
    error: str | None = None  # an error the upstream reported in-stream (already relayed)
    text_chars: int = 0  # characters of generated text seen, for local counting
    text_parts: list[str]  # the generated text itself, counted locally when usage is missing

    def feed(self, data: bytes) -> bytes:
        raise NotImplementedError

    def close(self) -> bytes:
        raise NotImplementedError


class Adapter:
    """Base class; one subclass per provider type, registered in ``registry``."""

    name: str = ""

    def chat_request(self, body: dict, target: Target, *, stream: bool) -> UpstreamRequest:
        raise NotImplementedError

    def chat_response(self, payload: dict, *, model: str) -> tuple[dict, Usage]:
        raise NotImplementedError

    def chat_stream(self, *, model: str, include_usage: bool) -> StreamTranslator:
        raise NotImplementedError

    def classify_error(self, status: int, payload: bytes) -> UpstreamError:
        return classify_http_error(status, payload)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def sse(obj: Any) -> bytes:
    """One OpenAI-style SSE event."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def error_message(payload: bytes) -> str:
    """Best-effort human message from any provider's error body."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload[:300].decode("utf-8", "replace").strip() or "upstream error"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("type") or data)[:500]
        if isinstance(err, str):
            return err[:500]
    return str(data)[:500]


def classify_http_error(status: int, payload: bytes) -> UpstreamError:
    message = error_message(payload)
    lowered = message.lower()
    if status in (401, 403):
        return UpstreamError(status, message, "upstream_auth_error", retryable=True, disable=True)
    if status == 402 or "insufficient_quota" in lowered or "credit balance" in lowered:
        return UpstreamError(status, message, "upstream_balance_error", retryable=True, disable=True)
    if status in (408, 409, 425, 429) or status >= 500:
        return UpstreamError(status, message, "upstream_error", retryable=True)
    if "overloaded" in lowered:
        return UpstreamError(status, message, "upstream_error", retryable=True)
    return UpstreamError(status, message, "invalid_request_error", retryable=False)


class SSELineBuffer:
    """Splits a byte stream into complete lines, keeping a partial tail between feeds."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def lines(self, data: bytes) -> list[bytes]:
        if self._tail:
            data = self._tail + data
        parts = data.split(b"\n")
        self._tail = parts.pop()
        return [p.rstrip(b"\r") for p in parts]

    def rest(self) -> bytes:
        tail, self._tail = self._tail, b""
        return tail.rstrip(b"\r")
