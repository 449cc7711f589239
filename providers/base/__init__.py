"""The contract every provider adapter implements, and the types it speaks in.

Adapters are pure translation: a client request goes in and an :class:`UpstreamRequest`
comes out; an upstream answer goes in and the client's answer plus :class:`Usage` comes
out. No I/O happens here: the relay owns HTTP. What an adapter can do is a set of
:class:`Capability` values; the relay asks for a capability, never for a type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
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


@dataclass(frozen=True, slots=True)
class UpstreamModel:
    """A model an upstream lists: ``id`` is what requests name it (a route's upstream model)."""

    id: str
    name: str = ""  # a display name, when the upstream gives one
    owned_by: str = ""


@dataclass(slots=True)
class UpstreamError:
    """An upstream failure classified for failover and for the client."""

    status: int
    message: str
    type: str = "upstream_error"
    retryable: bool = False  # move on to the next candidate
    disable: bool = False  # credentials or balance problem: auto-disable the provider


def listed_models(
    payload: bytes, key: str, *, name_field: str = "", owner_field: str = "", prefix: str = ""
) -> list[UpstreamModel]:
    """The models of a list answer ``{key: [{"id" or "name": ...}, ...]}``, sorted by id;
    raises ValueError when the answer is not such a list."""
    data = orjson.loads(payload)
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"the answer has no '{key}' list")
    found = {}
    for item in items:
        ident = item.get("id") or item.get("name") if isinstance(item, dict) else None
        if isinstance(ident, str) and ident:
            ident = ident.removeprefix(prefix)
            found[ident] = UpstreamModel(
                ident,
                name=str(item.get(name_field) or "") if name_field else "",
                owned_by=str(item.get(owner_field) or "") if owner_field else "",
            )
    return [found[ident] for ident in sorted(found)]


class StreamTranslator:
    """Turns upstream stream bytes into the client's stream bytes.

    ``feed`` receives raw bytes as they arrive (any split, lines may straddle calls) and
    returns the bytes to send to the client now (possibly ``b""``). ``close`` is called
    when the upstream ended; it returns trailing bytes (e.g. ``data: [DONE]``).
    ``usage`` holds the upstream's usage once seen; ``finished`` is True once the
    upstream sent its terminal event (a stream that ends without it was cut); ``error``
    is set when that terminal event was an error, which ``feed`` has already translated.

    Subclasses that read SSE implement ``_line`` (one complete line in, bytes out) and
    call ``super().__init__()``; ``feed``/``close`` split the lines for them.
    """

    usage: Usage | None = None
    finished: bool = False
    error: Any = None  # an error the upstream reported in-stream (already relayed)
    cut_upstream: bool = False  # the client's answer is complete: stop reading the upstream
    # False for a translator that reads another's output (the second of a chain): the
    # first one already notes the text, and an open stream must not keep it twice
    keeps_text: bool = True

    def __init__(self) -> None:
        self.buffer = SSELineBuffer()
        self.usage = None
        self.finished = False
        self.error = None
        self.text_chars = 0  # characters of generated text seen, for local counting
        self.text_parts: list[str] = []  # the text itself, counted when usage is missing

    def collect(self, text: str) -> None:
        """Note generated text (billed by local counting when the upstream gives no usage;
        the relay counts ``text_parts`` as they come and empties the list)."""
        if self.keeps_text:
            self.text_parts.append(text)
        self.text_chars += len(text)

    def _line(self, line: bytes) -> bytes:
        raise NotImplementedError

    def feed(self, data: bytes) -> bytes:
        return b"".join(self._line(line) for line in self.buffer.lines(data))

    def close(self) -> bytes:
        rest = self.buffer.rest()
        return self._line(rest) if rest else b""

    def stream_error(self, message: str) -> bytes | None:
        """The last bytes of a stream that broke off, when the translator's protocol needs
        its own state for them (a Responses stream's id and sequence numbers); None: the
        endpoint protocol's generic error event."""
        return None


class ChainedStream(StreamTranslator):
    """Two translators in a row (e.g. Gemini -> chat chunks -> Anthropic events).

    Usage and the generated text come from the first (it reads the upstream); the stream
    is finished when the second has emitted its end."""

    def __init__(self, first: StreamTranslator, second: StreamTranslator) -> None:
        self.first = first
        self.second = second
        second.keeps_text = False

    @property
    def usage(self) -> Usage | None:
        return self.first.usage or self.second.usage

    @property
    def finished(self) -> bool:
        return self.second.finished

    @property
    def error(self):
        return self.first.error or self.second.error

    @property
    def text_parts(self) -> list[str]:
        return self.first.text_parts

    @property
    def cut_upstream(self) -> bool:
        return self.second.cut_upstream

    def feed(self, data: bytes) -> bytes:
        middle = self.first.feed(data)
        return self.second.feed(middle) if middle else b""

    def close(self) -> bytes:
        middle = self.first.close()
        out = self.second.feed(middle) if middle else b""
        return out + self.second.close()

    def stream_error(self, message: str) -> bytes | None:
        return self.second.stream_error(message)


class Capability(StrEnum):
    """What a provider type can serve; endpoints ask for one, never for a type."""

    CHAT = "chat"  # OpenAI chat completions (translated to the provider's own protocol)
    COMPLETIONS = "completions"  # legacy text completions
    EMBEDDINGS = "embeddings"
    MESSAGES = "messages"  # Anthropic Messages, natively (passed through)
    COUNT_TOKENS = "count_tokens"  # Anthropic's message token counting, natively
    RESPONSES = "responses"  # OpenAI Responses, natively (passed through where the provider says so)
    PROBE = "probe"  # a cheap authenticated request for health checks
    MODEL_LIST = "model_list"  # the models the upstream account offers (for the operator)
    TASKS = "tasks"  # asynchronous jobs (midjourney-proxy): submit, fetch, list, parse


class Adapter:
    """Base class; one subclass per provider type, registered in ``providers.registry``.

    A subclass lists its ``capabilities`` and implements the methods of each; the relay
    asks ``supports(capability)`` and never checks types. Every method is pure: request
    bodies in, :class:`UpstreamRequest` out; upstream payloads in, client payloads out.
    """

    name: str = ""
    capabilities: frozenset[Capability] = frozenset()
    probe_needs_model = False  # probe with a routed model when no health-check model is set

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities

    # chat: the body is an OpenAI chat request; answers come back as OpenAI chat shapes
    def chat_request(self, body: dict, target: Target, *, stream: bool) -> UpstreamRequest:
        raise NotImplementedError

    def chat_response(self, payload: dict, *, model: str) -> tuple[dict, Usage | None]:
        raise NotImplementedError

    def chat_stream(self, *, model: str, include_usage: bool) -> StreamTranslator:
        raise NotImplementedError

    def chat_unsupported(self, body: dict) -> str | None:
        """The first parameter of a chat request this provider cannot honour, or None
        (the relay refuses such a request rather than answer without it)."""
        for param, honoured in self.chat_limits.items():
            value = body.get(param)
            if value is not None and not honoured(value):
                return param
        return None

    # parameter -> which of its values the provider honours (the rest are refused)
    chat_limits: dict = {}

    # completions, embeddings: the OpenAI protocol itself
    def completions_request(self, body: dict, target: Target, *, stream: bool) -> UpstreamRequest:
        raise NotImplementedError

    def embeddings_request(self, body: dict, target: Target) -> UpstreamRequest:
        raise NotImplementedError

    # messages, count_tokens: the Anthropic protocol itself
    def messages_request(
        self, body: dict, target: Target, *, stream: bool, beta: str | None = None
    ) -> UpstreamRequest:
        raise NotImplementedError

    def messages_stream(self, *, model: str) -> StreamTranslator:
        raise NotImplementedError

    def count_tokens_request(self, body: dict, target: Target, *, beta: str | None = None) -> UpstreamRequest:
        raise NotImplementedError

    # responses: the OpenAI Responses protocol itself (for providers with ``responses_api``)
    def responses_request(self, body: dict, target: Target, *, stream: bool) -> UpstreamRequest:
        raise NotImplementedError

    def responses_stored_request(
        self, method: str, response_id: str, target: Target, *, action: str = "", query: str = ""
    ) -> UpstreamRequest:
        """GET / DELETE ``responses/{id}[/{action}]`` of a response the upstream keeps."""
        raise NotImplementedError

    def responses_stream(self, *, model: str, on_done=None) -> StreamTranslator:
        raise NotImplementedError

    # probe
    def probe_request(self, target: Target) -> UpstreamRequest:
        """``target.upstream_model`` may be empty: probe without a model then."""
        raise NotImplementedError

    # model list
    def models_request(self, target: Target) -> UpstreamRequest:
        """The upstream's list of models (``target.upstream_model`` is not used)."""
        raise NotImplementedError

    def models_response(self, payload: bytes) -> list[UpstreamModel]:
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

    def pending(self) -> bytes:
        """The partial line held for the next feed (left in place)."""
        return self._tail

    def rest(self) -> bytes:
        tail, self._tail = self._tail, b""
        return tail.rstrip(b"\r")
