"""Fake AI provider upstream: a real loopback HTTP server for tests and ``make run``.

It speaks the OpenAI, Azure OpenAI, Anthropic and Gemini wire protocols with
deterministic token counts, and every request can be scripted.

Standalone::

    python -m tests.fakes.upstream --host 127.0.0.1 --port 9100 \
        [--api-key KEY] [--chunk-delay 0.0]

In tests::

    with FakeUpstream(api_key="sk-test") as fake:
        fake.script({"status": 500}, {"reply": "ok"})
        ...  # point the gateway at fake.url
        assert fake.requests[0]["json"]["model"] == "gpt-4o-mini"

Endpoints
---------
OpenAI: ``POST /v1/chat/completions``, ``POST /v1/completions``,
``POST /v1/embeddings``, ``GET /v1/models``.
Azure: ``POST /openai/deployments/{deployment}/chat/completions|completions|
embeddings?api-version=...`` (``api-version`` required; model = deployment).
Responses API: ``POST /v1/responses`` (OpenAI), ``POST /openai/v1/responses`` and
``POST /openai/responses?api-version=...`` (Azure; model = the body's deployment name):
JSON or typed SSE events (``response.created`` ... ``response.completed``, sequence
numbers, no ``[DONE]``), usage ``input_tokens = W + N`` (cached N), ``output_tokens = C +
R``; ``tool_call``/``tool_calls`` give ``function_call`` items, ``reasoning`` a
``reasoning`` item first (summary when ``reasoning.summary`` is set, a fake
``encrypted_content`` ``fake-enc:...`` when ``include`` has
``reasoning.encrypted_content``; a reasoning item sent back with other encrypted content
is refused with 400). Unless ``store`` is false, responses are kept by id:
``previous_response_id`` continues from them (400 for an unknown id), and ``GET``/
``DELETE .../responses/{id}``, ``GET .../responses/{id}/input_items`` serve them.
Anthropic: ``POST /v1/messages`` (requires ``anthropic-version`` header and
``max_tokens``), ``POST /v1/messages/count_tokens``.
Gemini: ``POST /v1beta/models/{model}:generateContent``,
``:streamGenerateContent`` (``?alt=sse`` gives SSE, otherwise a streamed JSON
array), ``:countTokens``; ``GET /v1beta/models``.
Control (never recorded, never consumes the script): ``POST /_fake/script``
``{"behaviours": [...]}``, ``GET /_fake/requests`` -> ``{"requests": [...]}``,
``POST /_fake/reset``, ``GET /_fake/health``.

Authentication
--------------
With an ``api_key`` the key must be sent the way the protocol does it, else 401
in the protocol's error format: OpenAI ``Authorization: Bearer K``; Azure
``api-key: K`` or Bearer; Anthropic ``x-api-key: K`` or Bearer; Gemini
``x-goog-api-key: K`` or ``?key=K``; ``GET /v1/models`` Bearer or
``x-api-key``. Without an ``api_key`` any credentials (or none) are accepted.

Behaviours
----------
A behaviour is a dict with optional, combinable keys:

* ``status`` (int >= 400): answer this error in the protocol's error format
  (429 adds ``retry-after: 1``).
* ``stall`` (float s): sleep before sending response headers.
* ``cut_after`` (int k): streams send k content chunks (after the preamble:
  OpenAI role chunk, Anthropic message_start/content_block_start/ping), then
  abort the TCP connection: no finish chunk, usage, ``[DONE]`` or
  ``message_stop``. k >= number of chunks sends every content chunk and then
  aborts. Non-streaming responses send the headers and half the body, then
  abort.
* ``chunk_delay`` (float s): delay between stream writes (overrides the
  server default).
* ``reply`` (str): the answer text. ``{tool_result}`` in it is replaced by
  the texts of the request's tool results (see ``after_tool_result``; joined
  by newlines, empty when there are none).
* ``tool_call`` (bool or ``{"name": str, "arguments": {...}}``): call a tool.
  ``true`` calls the first tool of the request (``"fake_tool"`` if there is
  none) with arguments ``{"query": "<last user text>"}``. An object names the
  tool (default: the first) and gives its arguments (default: as for
  ``true``); a named tool that the request does not offer is not called, the
  answer is the reply instead.
* ``tool_calls`` (list of ``{"name": str, "arguments": {...}}``): several
  tool calls in one assistant turn, called as given (offered or not; not with
  ``tool_call``). OpenAI: ``tool_calls`` with index 0..n-1 and ids
  ``call_fake_<i>``; Anthropic: one ``tool_use`` block per call, ids
  ``toolu_fake_<i>``; Gemini: one ``functionCall`` part per call. (A single
  ``tool_call`` keeps the ids ``call_fake_1`` / ``toolu_fake_1``.)
* ``interleave`` (bool): OpenAI streams send the argument fragments of the
  ``tool_calls`` round-robin across indexes (call 0 fragment 1, call 1
  fragment 1, call 0 fragment 2, ...), as some servers do; a call's header
  (id, name, empty arguments) comes right before its first fragment.
  Without it each call is sent whole, one after the other.
* ``reasoning`` (str): OpenAI chat streams it first as ``reasoning_content``
  deltas (one per word, counted as content chunks), after a role chunk, and
  JSON answers carry ``message.reasoning_content``; its words count in
  ``completion_tokens`` (and ``completion_tokens_details.reasoning_tokens``).
  Anthropic and Gemini ignore it.
* ``after_tool_result`` (behaviour): used instead of the behaviour it is part
  of when the request carries tool results after its last assistant turn
  (Anthropic ``tool_result`` blocks, OpenAI ``tool``/``function`` messages,
  Gemini ``functionResponse`` parts). With ``tool_call`` this scripts a whole
  agent turn: call the tool, then answer with its output, e.g.
  ``{"tool_call": {"name": "Bash", "arguments": {"command": "echo hi"}},
  "after_tool_result": {"reply": "It printed {tool_result}"}}``.
* ``no_usage`` (bool): omit usage from the response (JSON and streams; for
  OpenAI streams no usage chunk even with ``include_usage``).

Stop sequences: a text reply is cut before the earliest stop sequence of the
request it contains (the sequence itself is not returned), as the providers
do: OpenAI/Azure ``stop`` (string or list; chat and completions),
finish_reason ``"stop"``; Anthropic ``stop_sequences``, ``stop_reason:
"stop_sequence"`` and ``stop_sequence`` = the sequence (JSON and the stream's
message_delta); Gemini ``generationConfig.stopSequences``, finishReason
``STOP``. Tool calls are never cut.

Gemini honours ``generationConfig.candidateCount`` (1-8, else 400): that many
candidates (index 0..k-1) with the same answer, in every JSON or stream chunk.

``script()`` queues behaviours; each API request (everything except
``/_fake/*``) takes the oldest one, or the default ``{}`` when the queue is
empty. Requests rejected before that (bad JSON, 401, validation 400, unknown
path) do not consume the queue. If the last user message text contains
``[[fake:{json}]]`` that JSON is the behaviour and the queue is not consumed.
A request that carries tool results after its last assistant turn and has no
directive in its last user message takes the directive of the latest earlier
user message that has one: the turn that sends the tool results back keeps
the directive of the turn that asked for the tool.

Deterministic tokens
--------------------
``words(s) = len(s.split())`` (whitespace separated; directives such as
``[[cached:5]]`` count as words too).

* W = prompt words = max(1, sum of words over all request text):
  OpenAI chat: every message's string content or ``text`` parts (plus a
  top-level ``system`` string); Anthropic: ``system`` (string or text blocks) +
  every text block of every message (also text inside ``tool_result``);
  Gemini: every ``text`` part of ``contents`` and ``systemInstruction``;
  completions: the prompt(s); embeddings: the input(s) (token arrays count one
  word per token).
* N = cached tokens: if the raw request body contains ``[[cached:N]]``,
  otherwise 0.
* C = completion words: ``words(reply)`` (after a stop-sequence cut), default
  reply ``"This is a fake answer from the fake upstream."`` (C = 9). For tool
  calls C = ``words(json.dumps(arguments))`` summed over the calls, e.g. 3 for
  ``{"query": "hi there"}``. R = ``words(reasoning)`` (OpenAI chat only).
* OpenAI/Azure: ``prompt_tokens = W + N``, ``completion_tokens = (C + R) * n``,
  ``total_tokens`` = sum, ``prompt_tokens_details.cached_tokens = N``.
  Embeddings: ``prompt_tokens = total_tokens = W``.
* Anthropic: ``input_tokens = W``, ``output_tokens = C``,
  ``cache_read_input_tokens = N``, ``cache_creation_input_tokens = 0``;
  message_start reports ``output_tokens: 1``; count_tokens returns W.
* Gemini: ``promptTokenCount = W + N``, ``candidatesTokenCount = C * k`` (k
  candidates), ``totalTokenCount`` = sum, ``cachedContentTokenCount = N`` (only if N > 0);
  countTokens returns ``totalTokens = W``.

Streaming: one content chunk per word; chunk i is the word with its preceding
whitespace (``"This"``, ``" is"``, ...) so the chunks concatenate to the reply
exactly. Tool-call argument JSON is streamed the same way (always 2+
fragments). Gemini puts ``finishReason`` and ``usageMetadata`` on the last
content chunk; Gemini tool calls (all of them) are a single chunk.

Recording
---------
Each API request appends a dict: ``method, path, query, headers`` (lower-case
names), ``json`` (parsed body or None), ``behaviour``, ``behaviour_source``
(``"inline"|"script"|"default"|None``), ``status``, ``started_at``,
``ended_at`` (``time.monotonic()``), ``finished`` (the server ended the
response itself, including a scripted cut), ``cut``, ``client_disconnected``
(the client went away first), ``chunks_sent`` (content chunks written),
``stop_sequences`` (the stop sequences the request asked for, in its
protocol's field; ``[]`` when none), ``stop_hit`` (the one that cut the reply,
or None), ``usage`` (the usage object the response reported in its protocol's
shape once it completed: OpenAI ``usage``, Anthropic message usage with the
final ``output_tokens``, Gemini ``usageMetadata``; None when it reported none,
e.g. an OpenAI stream without ``include_usage``, ``no_usage``, errors, cuts).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import hashlib
import json
import logging
import re
import signal
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Self

from aiohttp import web

JSON = dict[str, Any]
# (kind, data); kind is "pre", "content", "mid" (between content chunks, never counted)
# or "post"
Items = list[tuple[str, bytes]]

DEFAULT_REPLY = "This is a fake answer from the fake upstream."
DEFAULT_TOOL_NAME = "fake_tool"
EMBEDDING_DIMENSIONS = 8
MODEL_CREATED = 1_700_000_000
MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "text-embedding-3-small",
    "gpt-3.5-turbo-instruct",
    "claude-3-5-sonnet-latest",
    "gemini-1.5-flash",
)

_BEHAVIOUR_TYPES: dict[str, tuple[type, ...]] = {
    "status": (int,),
    "stall": (int, float),
    "cut_after": (int,),
    "chunk_delay": (int, float),
    "reply": (str,),
    "tool_call": (bool, dict),
    "tool_calls": (list,),
    "interleave": (bool,),
    "reasoning": (str,),
    "after_tool_result": (dict,),
    "no_usage": (bool,),
}
GEMINI_MAX_CANDIDATES = 8
_INLINE_RE = re.compile(r"\[\[fake:(\{.*?\})\]\]", re.DOTALL)
_CACHED_RE = re.compile(r"\[\[cached:(\d+)\]\]")
_PIECE_RE = re.compile(r"\s*\S+")

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_GEMINI_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

log = logging.getLogger(__name__)


class _ApiError(Exception):
    """A request rejected before its behaviour is taken."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------
# Helpers: behaviours, text extraction, tokens
# --------------------------------------------------------------------------


def validate_behaviour(behaviour: Any) -> JSON:
    """Return a copy of ``behaviour`` or raise ValueError if it is malformed."""
    if not isinstance(behaviour, dict):
        raise ValueError(f"behaviour must be an object, got {behaviour!r}")
    for key, value in behaviour.items():
        types = _BEHAVIOUR_TYPES.get(key)
        if types is None:
            raise ValueError(f"unknown behaviour key {key!r}")
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise ValueError(f"behaviour {key!r} has the wrong type: {value!r}")
        if key in ("stall", "cut_after", "chunk_delay") and value < 0:
            raise ValueError(f"behaviour {key!r} must be >= 0")
    status = behaviour.get("status")
    if status is not None and not 400 <= status <= 599:
        raise ValueError("behaviour 'status' must be an HTTP error status (400-599)")
    checked = dict(behaviour)
    tool_call = behaviour.get("tool_call")
    if isinstance(tool_call, dict):
        unknown = set(tool_call) - {"name", "arguments"}
        if unknown:
            raise ValueError(f"behaviour 'tool_call' has unknown keys {sorted(unknown)}")
        if not isinstance(tool_call.get("name", ""), str):
            raise ValueError("behaviour 'tool_call' name must be a string")
        if not isinstance(tool_call.get("arguments", {}), dict):
            raise ValueError("behaviour 'tool_call' arguments must be an object")
        checked["tool_call"] = copy.deepcopy(tool_call)
    tool_calls = behaviour.get("tool_calls")
    if tool_calls is not None:
        if "tool_call" in behaviour:
            raise ValueError("behaviour: use 'tool_call' or 'tool_calls', not both")
        if not tool_calls:
            raise ValueError("behaviour 'tool_calls' must not be empty")
        for spec in tool_calls:
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
                raise ValueError("behaviour 'tool_calls' items need a 'name' (a string)")
            unknown = set(spec) - {"name", "arguments"}
            if unknown:
                raise ValueError(f"behaviour 'tool_calls' item has unknown keys {sorted(unknown)}")
            if not isinstance(spec.get("arguments", {}), dict):
                raise ValueError("behaviour 'tool_calls' arguments must be an object")
        checked["tool_calls"] = copy.deepcopy(tool_calls)
    if "after_tool_result" in behaviour:
        checked["after_tool_result"] = validate_behaviour(behaviour["after_tool_result"])
    return checked


def words(text: str) -> int:
    """Number of whitespace-separated words."""
    return len(text.split())


def pieces(text: str) -> list[str]:
    """Split ``text`` into word chunks that concatenate back to ``text``."""
    parts = _PIECE_RE.findall(text)
    if parts:
        parts[-1] += text[sum(map(len, parts)) :]
    return parts


def _fragments(text: str) -> list[str]:
    """Word chunks, at least two of them when ``text`` has two characters."""
    parts = pieces(text)
    if len(parts) < 2 and len(text) >= 2:
        half = len(text) // 2
        parts = [text[:half], text[half:]]
    return parts


def _block_texts(content: Any) -> list[str]:
    """Texts of a string or a list of ``{"type": "text", "text": ...}`` blocks."""
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif block.get("type") == "tool_result":
                texts.extend(_block_texts(block.get("content")))
    return texts


def _messages(body: JSON) -> list[JSON]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return []
    return [m for m in messages if isinstance(m, dict)]


def _chat_texts(body: JSON) -> list[str]:
    """Every text of an OpenAI chat or Anthropic messages request."""
    texts = _block_texts(body.get("system"))
    for message in _messages(body):
        texts.extend(_block_texts(message.get("content")))
    return texts


def _last_user_chat_text(body: JSON) -> str:
    for message in reversed(_messages(body)):
        if message.get("role") == "user":
            return " ".join(_block_texts(message.get("content")))
    return ""


def _gemini_parts_text(content: Any) -> list[str]:
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
        return []
    return [p["text"] for p in content["parts"] if isinstance(p, dict) and isinstance(p.get("text"), str)]


def _gemini_contents(body: JSON) -> list[JSON]:
    contents = body.get("contents")
    if not isinstance(contents, list):
        return []
    return [c for c in contents if isinstance(c, dict)]


def _gemini_texts(body: JSON) -> list[str]:
    system = body.get("systemInstruction", body.get("system_instruction"))
    texts = _gemini_parts_text(system)
    for content in _gemini_contents(body):
        texts.extend(_gemini_parts_text(content))
    return texts


def _last_user_gemini_text(body: JSON) -> str:
    for content in reversed(_gemini_contents(body)):
        if content.get("role", "user") == "user":
            return " ".join(_gemini_parts_text(content))
    return ""


def _input_items(value: Any) -> list[Any]:
    """Inputs of a completions prompt / embeddings input: strings or token lists."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return [value]
        return [v for v in value if isinstance(v, (str, list))]
    return []


def _input_texts(value: Any) -> list[str]:
    texts: list[str] = []
    for item in _input_items(value):
        texts.append(item if isinstance(item, str) else " ".join(["t"] * len(item)))
    return texts


def _last_input_text(value: Any) -> str:
    strings = [item for item in _input_items(value) if isinstance(item, str)]
    return strings[-1] if strings else ""


def embedding_vector(item: Any, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """Deterministic vector from a hash of the input (exact in float32)."""
    key = item if isinstance(item, str) else json.dumps(item)
    digest = hashlib.shake_256(key.encode()).digest(2 * dimensions)
    return [v / 32768.0 for v in struct.unpack(f"<{dimensions}h", digest)]


def _tool_names(body: JSON, protocol: str) -> list[str]:
    """Names of the tools a request offers, in order."""
    names: list[str] = []
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict):
            continue
        if protocol == "gemini":
            declarations = tool.get("functionDeclarations", tool.get("function_declarations"))
            for declaration in declarations if isinstance(declarations, list) else ():
                if isinstance(declaration, dict) and isinstance(declaration.get("name"), str):
                    names.append(declaration["name"])
            continue
        function = tool.get("function")
        if protocol == "anthropic" and isinstance(tool.get("name"), str):
            names.append(tool["name"])
        elif isinstance(function, dict) and isinstance(function.get("name"), str):
            names.append(function["name"])
    functions = body.get("functions")
    for function in functions if isinstance(functions, list) else ():
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return names


def _chat_tool_results(body: JSON) -> list[str] | None:
    """Texts of the tool results after the last assistant message of an OpenAI chat or
    Anthropic messages request (``tool``/``function`` messages, ``tool_result`` blocks), or
    None if there are none."""
    messages = _messages(body)
    roles = [message.get("role") for message in messages]
    last_assistant = max((i for i, role in enumerate(roles) if role == "assistant"), default=-1)
    found = False
    texts: list[str] = []
    for message in messages[last_assistant + 1 :]:
        content = message.get("content")
        if message.get("role") in ("tool", "function"):
            found = True
            texts.extend(_block_texts(content))
        elif message.get("role") == "user" and isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    found = True
                    texts.extend(_block_texts(block.get("content")))
    return texts if found else None


def _chat_user_texts(body: JSON) -> list[str]:
    """Texts of the user messages, the last one first."""
    return [
        " ".join(_block_texts(message.get("content")))
        for message in reversed(_messages(body))
        if message.get("role") == "user"
    ]


def _strings(value: Any) -> list[str]:
    """Every string inside a JSON value, in order."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def _gemini_tool_results(body: JSON) -> list[str] | None:
    """Texts (every string of the ``response``) of the ``functionResponse`` parts after the
    last ``model`` turn, or None if there are none."""
    contents = _gemini_contents(body)
    last_model = max((i for i, c in enumerate(contents) if c.get("role") == "model"), default=-1)
    found = False
    texts: list[str] = []
    for content in contents[last_model + 1 :]:
        parts = content.get("parts")
        for part in parts if isinstance(parts, list) else ():
            response = part.get("functionResponse") if isinstance(part, dict) else None
            if isinstance(response, dict):
                found = True
                texts.extend(_strings(response.get("response")))
    return texts if found else None


def _gemini_user_texts(body: JSON) -> list[str]:
    return [
        " ".join(_gemini_parts_text(content))
        for content in reversed(_gemini_contents(body))
        if content.get("role", "user") == "user"
    ]


def _string_list(value: Any) -> list[str]:
    """A stop value (a string or a list of strings) as a list of its non-empty strings."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str) and item]


def _stop_sequences(body: JSON, protocol: str) -> list[str]:
    """The stop sequences a request asks for in its protocol: OpenAI/Azure ``stop``,
    Anthropic ``stop_sequences``, Gemini ``generationConfig.stopSequences``."""
    if protocol == "anthropic":
        return _string_list(body.get("stop_sequences"))
    if protocol == "gemini":
        config = body.get("generationConfig", body.get("generation_config"))
        if not isinstance(config, dict):
            return []
        return _string_list(config.get("stopSequences", config.get("stop_sequences")))
    return _string_list(body.get("stop"))


def cut_at_stop(text: str, sequences: Iterable[str]) -> tuple[str, str | None]:
    """``text`` up to (without) the earliest stop sequence it contains, and that sequence
    (the first listed on a tie), or ``(text, None)`` when it contains none."""
    best: tuple[int, str] | None = None
    for sequence in sequences:
        at = text.find(sequence) if sequence else -1
        if at >= 0 and (best is None or at < best[0]):
            best = (at, sequence)
    if best is None:
        return text, None
    return text[: best[0]], best[1]


def _sse(data: Any, event: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {text}\n\n".encode()


# --------------------------------------------------------------------------
# The Responses API (OpenAI, Azure)
# --------------------------------------------------------------------------

FAKE_ENCRYPTED_PREFIX = "fake-enc:"


def _response_items(value: Any) -> list[JSON]:
    """A Responses ``input`` as items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _item_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for part in content if isinstance(content, list) else ():
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
    return " ".join(texts)


def responses_as_chat(instructions: Any, items: list[JSON], tools: Any) -> JSON:
    """A Responses conversation as the chat body the shared helpers read (texts, the last
    user text, tool results after the last assistant turn, offered tool names)."""
    messages: list[JSON] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            role = "system" if role == "developer" else role
            messages.append({"role": role, "content": _item_text(item.get("content"))})
        elif kind == "function_call":
            messages.append({"role": "assistant", "content": None, "tool_calls": [item]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append(
                {"role": "tool", "content": output if isinstance(output, str) else _item_text(output)}
            )
    names = [
        {"type": "function", "function": {"name": tool["name"]}}
        for tool in (tools if isinstance(tools, list) else ())
        if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("name"), str)
    ]
    return {"messages": messages, "tools": names}


def _hex_id(prefix: str, length: int = 48) -> str:
    return prefix + "_" + (uuid.uuid4().hex + uuid.uuid4().hex)[:length]


# --------------------------------------------------------------------------
# Shared state
# --------------------------------------------------------------------------


class FakeState:
    """Script queue and request records, shared between threads."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[JSON] = deque()
        self._records: list[JSON] = []
        self._counter = 0
        self.responses: dict[str, JSON] = {}  # stored Responses: id -> {response, input, items}

    def script(self, behaviours: Iterable[Any]) -> int:
        checked = [validate_behaviour(b) for b in behaviours]
        with self._cond:
            self._queue.extend(checked)
            return len(self._queue)

    def take(self) -> JSON | None:
        with self._cond:
            return self._queue.popleft() if self._queue else None

    def next_id(self) -> int:
        with self._cond:
            self._counter += 1
            return self._counter

    def add_record(self, record: JSON) -> JSON:
        with self._cond:
            self._records.append(record)
            self._cond.notify_all()
        return record

    def update(self, record: JSON, **fields: Any) -> None:
        with self._cond:
            record.update(fields)
            self._cond.notify_all()

    def records(self) -> list[JSON]:
        with self._cond:
            return copy.deepcopy(self._records)

    def reset(self) -> None:
        with self._cond:
            self._queue.clear()
            self._records = []
            self._counter = 0
            self.responses = {}
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[JSON]], bool], timeout: float) -> list[JSON]:
        """Wait until ``predicate(records)`` is true; return a snapshot."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self._records), timeout):
                raise TimeoutError(f"fake upstream: condition not met within {timeout}s")
            return copy.deepcopy(self._records)


# --------------------------------------------------------------------------
# The aiohttp application
# --------------------------------------------------------------------------


@dataclass
class _Call:
    """One API request being answered."""

    request: web.Request
    protocol: str  # "openai", "azure", "anthropic" or "gemini"
    record: JSON
    body: Any = None
    raw: str = ""
    model: str = ""
    behaviour: JSON = field(default_factory=dict)
    seq: int = 0
    created: int = 0
    prompt_words: int = 1
    cached: int = 0
    user_text: str = ""
    tool_results: list[str] | None = None
    stops: list[str] = field(default_factory=list)
    cut: bool = False
    response: web.StreamResponse | None = None

    @property
    def error_format(self) -> str:
        return "openai" if self.protocol == "azure" else self.protocol


@dataclass(frozen=True)
class _ToolUse:
    """One tool call of an answer."""

    id: str  # call_fake_<id> (OpenAI), toolu_fake_<id> (Anthropic)
    name: str
    arguments: JSON
    json: str


@dataclass(frozen=True)
class _Answer:
    """What a generating request answers: text (cut at a stop sequence), or tool calls,
    and the reasoning that precedes either."""

    text: str
    tools: list[_ToolUse]
    reasoning: str = ""
    stop: str | None = None  # the stop sequence that ended the text

    @property
    def output_words(self) -> int:
        """Completion tokens of one choice, reasoning excluded."""
        if self.tools:
            return sum(words(tool.json) for tool in self.tools)
        return words(self.text)


@dataclass(frozen=True)
class _Endpoint:
    """How to validate, measure and answer one kind of API request."""

    protocol: str
    respond: Callable[[_Call], Awaitable[web.StreamResponse]]
    validate: Callable[[_Call], None] = lambda call: None
    texts: Callable[[JSON], list[str]] = lambda body: []
    user_text: Callable[[JSON], str] = lambda body: ""
    needs_body: bool = True
    tool_results: Callable[[JSON], list[str] | None] = lambda body: None
    user_texts: Callable[[JSON], list[str]] = lambda body: []


def error_body(error_format: str, status: int, message: str) -> JSON:
    """The error JSON of a protocol."""
    if error_format == "anthropic":
        kind = _ANTHROPIC_ERROR_TYPES.get(status)
        if kind is None:
            kind = "api_error" if status >= 500 else "invalid_request_error"
        return {"type": "error", "error": {"type": kind, "message": message}}
    if error_format == "gemini":
        name = _GEMINI_STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        return {"error": {"code": status, "message": message, "status": name}}
    code: str | None = None
    if status == 401:
        kind, code = "invalid_request_error", "invalid_api_key"
    elif status == 429:
        kind, code = "requests", "rate_limit_exceeded"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class FakeServer:
    """Request handlers of the fake upstream (runs inside one event loop)."""

    def __init__(self, state: FakeState, api_key: str | None = None, chunk_delay: float = 0.0):
        self.state = state
        self.api_key = api_key
        self.chunk_delay = chunk_delay

    # -- application ------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        conversation = {"tool_results": _chat_tool_results, "user_texts": _chat_user_texts}
        openai_chat = _Endpoint(
            "openai", self._chat, self._validate_chat, _chat_texts, _last_user_chat_text, **conversation
        )
        openai_completions = _Endpoint(
            "openai",
            self._completions,
            self._validate_completions,
            lambda b: _input_texts(b.get("prompt")),
            lambda b: _last_input_text(b.get("prompt")),
        )
        openai_embeddings = _Endpoint(
            "openai",
            self._embeddings,
            self._validate_embeddings,
            lambda b: _input_texts(b.get("input")),
            lambda b: _last_input_text(b.get("input")),
        )
        messages = _Endpoint(
            "anthropic",
            self._messages,
            self._validate_messages,
            _chat_texts,
            _last_user_chat_text,
            **conversation,
        )
        count_tokens = _Endpoint(
            "anthropic",
            self._count_tokens,
            self._validate_count_tokens,
            _chat_texts,
            _last_user_chat_text,
        )
        models = _Endpoint("openai", self._models, needs_body=False)
        add = app.router.add_route
        add("POST", "/v1/chat/completions", self._route(openai_chat))
        add("POST", "/v1/completions", self._route(openai_completions))
        add("POST", "/v1/embeddings", self._route(openai_embeddings))
        add("GET", "/v1/models", self._route(models))
        add("POST", "/v1/messages", self._route(messages))
        add("POST", "/v1/messages/count_tokens", self._route(count_tokens))
        add(
            "GET",
            "/v1beta/models",
            self._route(_Endpoint("gemini", self._gemini_models, needs_body=False)),
        )
        add("POST", "/v1beta/models/{tail}", self._gemini_route)
        for suffix, endpoint in (
            ("chat/completions", openai_chat),
            ("completions", openai_completions),
            ("embeddings", openai_embeddings),
        ):
            azure = _Endpoint(
                "azure",
                endpoint.respond,
                self._azure_validate(endpoint.validate),
                endpoint.texts,
                endpoint.user_text,
                tool_results=endpoint.tool_results,
                user_texts=endpoint.user_texts,
            )
            add(
                "POST",
                f"/openai/deployments/{{deployment}}/{suffix}",
                self._route(azure),
            )
        responses = _Endpoint(
            "openai",
            self._responses,
            self._validate_responses,
            _chat_texts,
            _last_user_chat_text,
            **conversation,
        )
        stored = _Endpoint("openai", self._stored_response, needs_body=False)
        for prefix, protocol in (
            ("/v1", "openai"),
            ("/openai/v1", "azure"),
            ("/openai", "azure"),
        ):
            add("POST", f"{prefix}/responses", self._route(replace(responses, protocol=protocol)))
            for method, path in (("GET", "{rid}"), ("DELETE", "{rid}"), ("GET", "{rid}/input_items")):
                add(method, f"{prefix}/responses/{path}", self._route(replace(stored, protocol=protocol)))
        add("POST", "/_fake/script", self._control_script)
        add("GET", "/_fake/requests", self._control_requests)
        add("POST", "/_fake/reset", self._control_reset)
        add("GET", "/_fake/health", self._control_health)
        add("*", "/{tail:.*}", self._not_found)
        return app

    def _route(self, endpoint: _Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._handle(request, endpoint)

        return handler

    # -- control API ------------------------------------------------------

    async def _control_script(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
            behaviours = payload["behaviours"] if isinstance(payload, dict) else None
            if not isinstance(behaviours, list):
                raise ValueError("body must be {'behaviours': [...]}")
            queued = self.state.script(behaviours)
        except (ValueError, KeyError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"queued": queued})

    async def _control_requests(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.state.records()})

    async def _control_reset(self, request: web.Request) -> web.Response:
        self.state.reset()
        return web.json_response({"ok": True})

    async def _control_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _not_found(self, request: web.Request) -> web.Response:
        error_format = "openai"
        if request.path.startswith("/v1/messages"):
            error_format = "anthropic"
        elif request.path.startswith("/v1beta"):
            error_format = "gemini"
        message = f"fake upstream: no route for {request.method} {request.path}"
        return web.json_response(error_body(error_format, 404, message), status=404)

    # -- request pipeline -------------------------------------------------

    async def _handle(self, request: web.Request, endpoint: _Endpoint) -> web.StreamResponse:
        raw = await request.read()
        body: Any = None
        bad_json = False
        if endpoint.needs_body:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                bad_json = True
            if not isinstance(body, dict):
                bad_json = True
        record = self.state.add_record(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "json": None if bad_json else body,
                "behaviour": None,
                "behaviour_source": None,
                "status": None,
                "started_at": time.monotonic(),
                "ended_at": None,
                "finished": False,
                "cut": False,
                "client_disconnected": False,
                "chunks_sent": 0,
                "stop_sequences": [],
                "stop_hit": None,
                "usage": None,
            }
        )
        protocol = endpoint.protocol
        if request.path == "/v1/models" and request.headers.get("anthropic-version"):
            protocol = "anthropic"
        call = _Call(
            request=request,
            protocol=protocol,
            record=record,
            body=body if isinstance(body, dict) else {},
            raw=raw.decode("utf-8", "replace"),
            seq=self.state.next_id(),
            created=int(time.time()),
        )
        try:
            return await self._process(call, endpoint, bad_json)
        except asyncio.CancelledError:
            self._mark_disconnected(call)
            raise
        except ConnectionResetError:
            self._mark_disconnected(call)
            return call.response or web.Response(status=499)

    async def _process(self, call: _Call, endpoint: _Endpoint, bad_json: bool) -> web.StreamResponse:
        if bad_json:
            return await self._send_error(call, 400, "fake upstream: could not parse the JSON body")
        if not self._authorized(call):
            return await self._send_error(call, 401, "fake upstream: invalid or missing API key")
        try:
            endpoint.validate(call)
        except _ApiError as exc:
            return await self._send_error(call, exc.status, exc.message)
        call.stops = _stop_sequences(call.body, call.error_format)
        self.state.update(call.record, stop_sequences=list(call.stops))
        call.user_text = endpoint.user_text(call.body)
        call.tool_results = endpoint.tool_results(call.body)
        # a turn that sends tool results back keeps the directive of the turn that asked
        earlier = endpoint.user_texts(call.body)[1:] if call.tool_results is not None else []
        try:
            behaviour, source = self._behaviour([call.user_text, *earlier])
        except ValueError as exc:
            return await self._send_error(call, 400, f"fake upstream: bad directive: {exc}")
        if call.tool_results is not None and "after_tool_result" in behaviour:
            behaviour = behaviour["after_tool_result"]
        call.behaviour = behaviour
        self.state.update(call.record, behaviour=behaviour, behaviour_source=source)
        call.prompt_words = max(1, sum(words(t) for t in endpoint.texts(call.body)))
        cached = _CACHED_RE.search(call.raw)
        call.cached = int(cached.group(1)) if cached else 0
        if behaviour.get("stall"):
            await asyncio.sleep(behaviour["stall"])
        if "status" in behaviour:
            status = behaviour["status"]
            headers = {"retry-after": "1"} if status == 429 else None
            message = f"fake upstream: scripted error {status}"
            return await self._send_error(call, status, message, headers)
        return await endpoint.respond(call)

    def _behaviour(self, user_texts: list[str]) -> tuple[JSON, str]:
        """The behaviour of the first directive in ``user_texts``, else the script's next."""
        for text in user_texts:
            match = _INLINE_RE.search(text)
            if match:
                return validate_behaviour(json.loads(match.group(1))), "inline"
        scripted = self.state.take()
        if scripted is not None:
            return scripted, "script"
        return {}, "default"

    def _authorized(self, call: _Call) -> bool:
        if self.api_key is None:
            return True
        headers = call.request.headers
        offered: list[str | None] = []
        bearer = headers.get("Authorization", "")
        if bearer.lower().startswith("bearer "):
            offered.append(bearer[7:].strip())
        if call.protocol == "anthropic" or call.request.path == "/v1/models":
            offered.append(headers.get("x-api-key"))
        elif call.protocol == "azure":
            offered.append(headers.get("api-key"))
        elif call.protocol == "gemini":
            offered = [headers.get("x-goog-api-key"), call.request.query.get("key")]
        return self.api_key in offered

    def _mark_disconnected(self, call: _Call) -> None:
        if not call.cut:
            now = time.monotonic()
            self.state.update(call.record, finished=False, client_disconnected=True, ended_at=now)

    def _finish(self, call: _Call, usage: JSON | None = None) -> None:
        """The response is complete; ``usage``: the usage object it reported, if any."""
        fields: JSON = {"finished": True, "ended_at": time.monotonic()}
        if usage is not None:
            fields["usage"] = copy.deepcopy(usage)
        self.state.update(call.record, **fields)

    def _cut(self, call: _Call, response: web.StreamResponse) -> web.StreamResponse:
        call.cut = True
        self.state.update(call.record, finished=True, cut=True, ended_at=time.monotonic())
        transport = call.request.transport
        if transport is not None:
            transport.abort()
        return response

    # -- response writers -------------------------------------------------

    async def _send_error(
        self,
        call: _Call,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        payload = error_body(call.error_format, status, message)
        return await self._send_json(call, payload, status=status, headers=headers, allow_cut=False)

    async def _send_json(
        self,
        call: _Call,
        payload: Any,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        allow_cut: bool = True,
        usage: JSON | None = None,
    ) -> web.StreamResponse:
        data = json.dumps(payload).encode()
        cut_after = call.behaviour.get("cut_after") if allow_cut else None
        response: web.StreamResponse
        if cut_after is None:
            response = web.Response(
                status=status,
                body=data,
                content_type="application/json",
                headers=headers,
            )
        else:
            response = web.StreamResponse(status=status, headers=headers)
            response.content_type = "application/json"
            response.content_length = len(data)
        call.response = response
        await response.prepare(call.request)
        self.state.update(call.record, status=status)
        if cut_after is not None:
            await response.write(data[: len(data) // 2])
            return self._cut(call, response)
        self._finish(call, usage)  # before the last bytes, so a client never sees it unfinished
        await response.write_eof()
        return response

    async def _stream(
        self, call: _Call, items: Items, content_type: str, usage: JSON | None = None
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
        response.content_type = content_type
        call.response = response
        await response.prepare(call.request)
        self.state.update(call.record, status=200)
        delay = call.behaviour.get("chunk_delay", self.chunk_delay)
        cut_after = call.behaviour.get("cut_after")
        sent = 0
        for index, (kind, data) in enumerate(items):
            if cut_after is not None and (kind == "post" or (kind == "content" and sent >= cut_after)):
                return self._cut(call, response)
            if index and delay:
                await asyncio.sleep(delay)
            await response.write(data)
            if kind == "content":
                sent += 1
                self.state.update(call.record, chunks_sent=sent)
        if cut_after is not None:
            return self._cut(call, response)
        self._finish(call, usage)  # before the last bytes, so a client never sees it unfinished
        await response.write_eof()
        return response

    # -- shared answer pieces ---------------------------------------------

    def _reply(self, call: _Call) -> str:
        reply = call.behaviour.get("reply", DEFAULT_REPLY)
        return reply.replace("{tool_result}", "\n".join(call.tool_results or []))

    def _answer(self, call: _Call) -> _Answer:
        """The answer of a generating request (and the stop sequence hit, recorded)."""
        tools: list[_ToolUse] = []
        if call.behaviour.get("tool_calls"):
            for index, spec in enumerate(call.behaviour["tool_calls"]):
                arguments = spec.get("arguments", {})
                tools.append(_ToolUse(str(index), spec["name"], arguments, json.dumps(arguments)))
        else:
            tool = self._tool(call)
            if tool:
                tools.append(_ToolUse("1", *tool))
        text, stop = ("", None) if tools else self._text(call)
        return _Answer(text, tools, call.behaviour.get("reasoning", ""), stop)

    def _text(self, call: _Call) -> tuple[str, str | None]:
        """The reply cut before the request's first stop sequence, and that sequence."""
        text, stop = cut_at_stop(self._reply(call), call.stops)
        if stop is not None:
            self.state.update(call.record, stop_hit=stop)
        return text, stop

    def _tool(self, call: _Call) -> tuple[str, JSON, str] | None:
        """Name, arguments and JSON arguments of the tool call answer, or None to answer
        with text (no ``tool_call``, or a named tool the request does not offer)."""
        wanted = call.behaviour.get("tool_call")
        if not wanted:
            return None
        spec = wanted if isinstance(wanted, dict) else {}
        offered = _tool_names(call.body, call.error_format)
        name = spec.get("name") or (offered[0] if offered else DEFAULT_TOOL_NAME)
        if spec.get("name") and name not in offered:
            return None
        arguments = spec.get("arguments", {"query": call.user_text})
        return name, arguments, json.dumps(arguments)

    def _stream_requested(self, call: _Call) -> bool:
        return call.body.get("stream") is True

    def _include_usage(self, call: _Call) -> bool:
        options = call.body.get("stream_options")
        wanted = isinstance(options, dict) and options.get("include_usage") is True
        return wanted and not call.behaviour.get("no_usage")

    def _openai_usage(self, call: _Call, completion: int, reasoning: int = 0) -> JSON:
        prompt = call.prompt_words + call.cached
        usage: JSON = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": call.cached},
        }
        if reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
        return usage

    # -- OpenAI -----------------------------------------------------------

    def _validate_openai_common(self, call: _Call) -> None:
        if call.protocol == "azure":
            call.model = call.request.match_info["deployment"]
        else:
            model = call.body.get("model")
            if not isinstance(model, str) or not model:
                raise _ApiError(400, "you must provide a model parameter")
            call.model = model
        n = call.body.get("n", 1)
        if n is None:
            n = 1
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
            raise _ApiError(400, "'n' must be an integer between 1 and 128")

    def _validate_chat(self, call: _Call) -> None:
        self._validate_openai_common(call)
        if not isinstance(call.body.get("messages"), list) or not call.body["messages"]:
            raise _ApiError(400, "'messages' must be a non-empty array")

    def _validate_completions(self, call: _Call) -> None:
        self._validate_openai_common(call)
        if "prompt" not in call.body:
            raise _ApiError(400, "'prompt' is a required property")

    def _validate_embeddings(self, call: _Call) -> None:
        self._validate_openai_common(call)
        if not _input_items(call.body.get("input")):
            raise _ApiError(400, "'input' must be a string or a non-empty array")
        dims = call.body.get("dimensions")
        if dims is not None and (not isinstance(dims, int) or not 1 <= dims <= 4096):
            raise _ApiError(400, "'dimensions' must be an integer between 1 and 4096")
        if call.body.get("encoding_format") not in (None, "float", "base64"):
            raise _ApiError(400, "'encoding_format' must be 'float' or 'base64'")

    def _azure_validate(self, validate: Callable[[_Call], None]) -> Callable[[_Call], None]:
        def azure_validate(call: _Call) -> None:
            if not call.request.query.get("api-version"):
                raise _ApiError(400, "Missing required query parameter: api-version")
            validate(call)

        return azure_validate

    def _choices_count(self, call: _Call) -> int:
        return call.body.get("n") or 1

    async def _chat(self, call: _Call) -> web.StreamResponse:
        n = self._choices_count(call)
        ident = f"chatcmpl-fake-{call.seq}"
        answer = self._answer(call)
        reasoning_words = words(answer.reasoning)
        completion = (answer.output_words + reasoning_words) * n
        usage = self._openai_usage(call, completion, reasoning_words * n)
        if self._stream_requested(call):
            items = self._chat_items(call, ident, n, answer, usage)
            reported = usage if self._include_usage(call) else None
            return await self._stream(call, items, "text/event-stream", reported)
        message: JSON = {"role": "assistant", "content": answer.text, "refusal": None}
        if answer.reasoning:
            message["reasoning_content"] = answer.reasoning
        if answer.tools:
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": f"call_fake_{tool.id}",
                    "type": "function",
                    "function": {"name": tool.name, "arguments": tool.json},
                }
                for tool in answer.tools
            ]
        payload: JSON = {
            "id": ident,
            "object": "chat.completion",
            "created": call.created,
            "model": call.model,
            "choices": [
                {
                    "index": i,
                    "message": copy.deepcopy(message),
                    "logprobs": None,
                    "finish_reason": "tool_calls" if answer.tools else "stop",
                }
                for i in range(n)
            ],
            "usage": usage,
            "system_fingerprint": "fp_fake",
        }
        if call.behaviour.get("no_usage"):
            del payload["usage"]
        return await self._send_json(call, payload, usage=payload.get("usage"))

    def _chat_items(self, call: _Call, ident: str, n: int, answer: _Answer, usage: JSON) -> Items:
        include_usage = self._include_usage(call)

        def chunk(choices: list[JSON], usage: JSON | None = None) -> bytes:
            data: JSON = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": call.created,
                "model": call.model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
            }
            if include_usage:
                data["usage"] = usage
            return _sse(data)

        def choice(index: int, delta: JSON, finish: str | None = None) -> JSON:
            return {
                "index": index,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish,
            }

        def each(kind: str, delta: JSON) -> Items:
            return [(kind, chunk([choice(i, copy.deepcopy(delta))])) for i in range(n)]

        def header(index: int, tool: _ToolUse) -> JSON:
            return {
                "index": index,
                "id": f"call_fake_{tool.id}",
                "type": "function",
                "function": {"name": tool.name, "arguments": ""},
            }

        def fragment(index: int, text: str) -> JSON:
            return {"tool_calls": [{"index": index, "function": {"arguments": text}}]}

        items: Items = []
        tools = answer.tools
        if answer.reasoning:
            items += each("pre", {"role": "assistant", "content": None if tools else ""})
            for piece in pieces(answer.reasoning):
                items += each("content", {"reasoning_content": piece})
        if tools:
            first: JSON = {"tool_calls": [header(0, tools[0])]}
            if answer.reasoning:
                items += each("mid", first)
            else:
                items += each("pre", {"role": "assistant", "content": None, **first})
            fragments = [_fragments(tool.json) for tool in tools]
            if call.behaviour.get("interleave"):
                # round robin: call 0 fragment 1, call 1 fragment 1, call 0 fragment 2...
                order = [
                    (index, number)
                    for number in range(max(map(len, fragments)))
                    for index in range(len(tools))
                    if number < len(fragments[index])
                ]
            else:
                order = [
                    (index, number) for index, parts in enumerate(fragments) for number in range(len(parts))
                ]
            for index, number in order:
                if number == 0 and index > 0:
                    items += each("mid", {"tool_calls": [header(index, tools[index])]})
                items += each("content", fragment(index, fragments[index][number]))
            finish = "tool_calls"
        else:
            if not answer.reasoning:
                items += each("pre", {"role": "assistant", "content": "", "refusal": None})
            for piece in pieces(answer.text):
                items += each("content", {"content": piece})
            finish = "stop"
        items += [("post", chunk([choice(i, {}, finish)])) for i in range(n)]
        if include_usage:
            items.append(("post", chunk([], usage)))
        items.append(("post", _sse("[DONE]")))
        return items

    async def _completions(self, call: _Call) -> web.StreamResponse:
        n = self._choices_count(call)
        ident = f"cmpl-fake-{call.seq}"
        reply, _ = self._text(call)
        completion = words(reply) * n
        usage = self._openai_usage(call, completion)
        if self._stream_requested(call):
            include_usage = self._include_usage(call)

            def chunk(choices: list[JSON], usage: JSON | None = None) -> bytes:
                data: JSON = {
                    "id": ident,
                    "object": "text_completion",
                    "created": call.created,
                    "model": call.model,
                    "choices": choices,
                }
                if include_usage:
                    data["usage"] = usage
                return _sse(data)

            def choice(index: int, text: str, finish: str | None = None) -> JSON:
                return {
                    "text": text,
                    "index": index,
                    "logprobs": None,
                    "finish_reason": finish,
                }

            items: Items = []
            for piece in pieces(reply):
                items += [("content", chunk([choice(i, piece)])) for i in range(n)]
            items += [("post", chunk([choice(i, "", "stop")])) for i in range(n)]
            if include_usage:
                items.append(("post", chunk([], usage)))
            items.append(("post", _sse("[DONE]")))
            return await self._stream(call, items, "text/event-stream", usage if include_usage else None)
        payload: JSON = {
            "id": ident,
            "object": "text_completion",
            "created": call.created,
            "model": call.model,
            "choices": [
                {"text": reply, "index": i, "logprobs": None, "finish_reason": "stop"} for i in range(n)
            ],
            "usage": usage,
        }
        if call.behaviour.get("no_usage"):
            del payload["usage"]
        return await self._send_json(call, payload, usage=payload.get("usage"))

    async def _embeddings(self, call: _Call) -> web.StreamResponse:
        dimensions = call.body.get("dimensions") or EMBEDDING_DIMENSIONS
        as_base64 = call.body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(_input_items(call.body.get("input"))):
            vector = embedding_vector(item, dimensions)
            embedding: Any = vector
            if as_base64:
                embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        payload: JSON = {
            "object": "list",
            "data": data,
            "model": call.model,
            "usage": {
                "prompt_tokens": call.prompt_words,
                "total_tokens": call.prompt_words,
            },
        }
        if call.behaviour.get("no_usage"):
            del payload["usage"]
        return await self._send_json(call, payload, usage=payload.get("usage"))

    async def _models(self, call: _Call) -> web.StreamResponse:
        data = [
            {
                "id": model,
                "object": "model",
                "created": MODEL_CREATED,
                "owned_by": "fake",
            }
            for model in MODELS
        ]
        return await self._send_json(call, {"object": "list", "data": data})

    # -- Responses API (OpenAI, Azure) ------------------------------------

    def _validate_responses(self, call: _Call) -> None:
        preview = call.protocol == "azure" and "/openai/v1/" not in call.request.path
        if preview and not call.request.query.get("api-version"):
            raise _ApiError(400, "Missing required query parameter: api-version")
        body = call.body
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _ApiError(400, "you must provide a model parameter")
        call.model = model
        if not isinstance(body.get("input"), (str, list)) or not body["input"]:
            raise _ApiError(400, "Missing required parameter: 'input'.")
        history: list[JSON] = []
        previous = body.get("previous_response_id")
        if previous is not None:
            stored = self.state.responses.get(previous)
            if stored is None:
                raise _ApiError(400, f"Previous response with id '{previous}' not found.")
            history = stored["items"]
        current = _response_items(body["input"])
        for item in current:
            encrypted = item.get("encrypted_content") if item.get("type") == "reasoning" else None
            if encrypted is not None and not str(encrypted).startswith(FAKE_ENCRYPTED_PREFIX):
                raise _ApiError(400, "The encrypted content for item could not be verified.")
        items = [*history, *current]
        call.body = {
            **responses_as_chat(body.get("instructions"), items, body.get("tools")),
            "stream": body.get("stream"),
            "_request": body,
            "_items": items,
            "_input": current,
        }

    def _response_output(self, call: _Call, answer: _Answer) -> list[JSON]:
        request = call.body["_request"]
        output: list[JSON] = []
        if answer.reasoning:
            reasoning = request.get("reasoning") if isinstance(request.get("reasoning"), dict) else {}
            item: JSON = {"id": _hex_id("rs"), "type": "reasoning", "summary": []}
            if reasoning.get("summary"):
                item["summary"] = [{"type": "summary_text", "text": answer.reasoning}]
            include = request.get("include") if isinstance(request.get("include"), list) else []
            if "reasoning.encrypted_content" in include:
                token = base64.b64encode(answer.reasoning.encode()).decode()
                item["encrypted_content"] = FAKE_ENCRYPTED_PREFIX + token
            output.append(item)
        for tool in answer.tools:
            output.append(
                {
                    "id": _hex_id("fc"),
                    "type": "function_call",
                    "status": "completed",
                    "call_id": f"call_fake_{tool.id}",
                    "name": tool.name,
                    "arguments": tool.json,
                }
            )
        if not answer.tools:
            output.append(
                {
                    "id": _hex_id("msg"),
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": answer.text, "annotations": []}],
                }
            )
        return output

    async def _responses(self, call: _Call) -> web.StreamResponse:
        request = call.body["_request"]
        answer = self._answer(call)
        reasoning_words = words(answer.reasoning)
        output_tokens = answer.output_words + reasoning_words
        input_tokens = call.prompt_words + call.cached
        usage: JSON | None = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": call.cached},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning_words},
            "total_tokens": input_tokens + output_tokens,
        }
        if call.behaviour.get("no_usage"):
            usage = None
        output = self._response_output(call, answer)
        store = request.get("store") is not False
        response: JSON = {
            "id": _hex_id("resp"),
            "object": "response",
            "created_at": call.created,
            "status": "completed",
            "error": None,
            "incomplete_details": None,
            "instructions": request.get("instructions"),
            "model": call.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": request.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": store,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": request.get("tools") or [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "metadata": {},
        }
        if store:
            self.state.responses[response["id"]] = {
                "response": response,
                "input": call.body["_input"],
                "items": [*call.body["_items"], *output],
            }
        if not self._stream_requested(call):
            return await self._send_json(call, response, usage=usage)
        return await self._stream(call, self._response_events(response, answer), "text/event-stream", usage)

    def _response_events(self, response: JSON, answer: _Answer) -> Items:
        seq = 0
        items: Items = []

        def event(kind: str, stage: str, **data: Any) -> None:
            nonlocal seq
            items.append((stage, _sse({"type": kind, "sequence_number": seq, **data}, event=kind)))
            seq += 1

        start = {**response, "status": "in_progress", "output": [], "usage": None}
        event("response.created", "pre", response=start)
        event("response.in_progress", "pre", response=start)
        for index, item in enumerate(response["output"]):
            if item["type"] == "reasoning":
                event("response.output_item.added", "mid", output_index=index, item={**item, "summary": []})
                for number, summary in enumerate(item["summary"]):
                    event(
                        "response.reasoning_summary_text.done",
                        "mid",
                        item_id=item["id"],
                        output_index=index,
                        summary_index=number,
                        text=summary["text"],
                    )
                event("response.output_item.done", "mid", output_index=index, item=item)
            elif item["type"] == "function_call":
                event("response.output_item.added", "mid", output_index=index, item={**item, "arguments": ""})
                for piece in _fragments(item["arguments"]):
                    event(
                        "response.function_call_arguments.delta",
                        "content",
                        item_id=item["id"],
                        output_index=index,
                        delta=piece,
                    )
                event(
                    "response.function_call_arguments.done",
                    "mid",
                    item_id=item["id"],
                    output_index=index,
                    arguments=item["arguments"],
                )
                event("response.output_item.done", "mid", output_index=index, item=item)
            else:
                text = item["content"][0]["text"]
                ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
                event("response.output_item.added", "mid", output_index=index, item={**item, "content": []})
                empty = {"type": "output_text", "text": "", "annotations": []}
                event("response.content_part.added", "mid", part=empty, **ids)
                for piece in pieces(text):
                    event("response.output_text.delta", "content", delta=piece, **ids)
                event("response.output_text.done", "mid", text=text, **ids)
                event("response.content_part.done", "mid", part=item["content"][0], **ids)
                event("response.output_item.done", "mid", output_index=index, item=item)
        event("response.completed", "post", response=response)
        return items

    async def _stored_response(self, call: _Call) -> web.StreamResponse:
        response_id = call.request.match_info["rid"]
        stored = self.state.responses.get(response_id)
        if stored is None:
            return await self._send_error(call, 404, f"Response with id '{response_id}' not found.")
        if call.request.method == "DELETE":
            del self.state.responses[response_id]
            return await self._send_json(call, {"id": response_id, "object": "response", "deleted": True})
        if call.request.path.endswith("/input_items"):
            data = [{"id": _hex_id("msg"), **item} if "id" not in item else item for item in stored["input"]]
            page = {
                "object": "list",
                "data": data[::-1],
                "first_id": data[-1]["id"] if data else None,
                "last_id": data[0]["id"] if data else None,
                "has_more": False,
            }
            return await self._send_json(call, page)
        return await self._send_json(call, stored["response"])

    # -- Anthropic --------------------------------------------------------

    def _validate_count_tokens(self, call: _Call) -> None:
        if not call.request.headers.get("anthropic-version"):
            raise _ApiError(400, "anthropic-version: header is required")
        model = call.body.get("model")
        if not isinstance(model, str) or not model:
            raise _ApiError(400, "model: Field required")
        call.model = model
        if not isinstance(call.body.get("messages"), list):
            raise _ApiError(400, "messages: Field required")

    def _validate_messages(self, call: _Call) -> None:
        self._validate_count_tokens(call)
        max_tokens = call.body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise _ApiError(400, "max_tokens: Field required")

    def _anthropic_usage(self, call: _Call, output_tokens: int) -> JSON:
        return {
            "input_tokens": call.prompt_words,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": call.cached,
            "cache_creation_input_tokens": 0,
        }

    async def _count_tokens(self, call: _Call) -> web.StreamResponse:
        return await self._send_json(call, {"input_tokens": call.prompt_words})

    async def _messages(self, call: _Call) -> web.StreamResponse:
        ident = f"msg_fake_{call.seq}"
        answer = self._answer(call)
        output_tokens = answer.output_words
        stop_reason = "tool_use" if answer.tools else "stop_sequence" if answer.stop else "end_turn"
        no_usage = bool(call.behaviour.get("no_usage"))
        usage = None if no_usage else self._anthropic_usage(call, output_tokens)
        message: JSON = {
            "id": ident,
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._anthropic_usage(call, 1),
        }
        if not self._stream_requested(call):
            if answer.tools:
                blocks: list[JSON] = [
                    {
                        "type": "tool_use",
                        "id": f"toolu_fake_{tool.id}",
                        "name": tool.name,
                        "input": tool.arguments,
                    }
                    for tool in answer.tools
                ]
            else:
                blocks = [{"type": "text", "text": answer.text}]
            message.update(
                content=blocks,
                stop_reason=stop_reason,
                stop_sequence=answer.stop,
                usage=usage,
            )
            if no_usage:
                del message["usage"]
            return await self._send_json(call, message, usage=usage)

        def event(kind: str, **data: Any) -> bytes:
            return _sse({"type": kind, **data}, event=kind)

        if no_usage:
            del message["usage"]
        streamed: list[tuple[JSON, list[JSON]]] = []  # (content_block_start block, deltas)
        for tool in answer.tools:
            start: JSON = {"type": "tool_use", "id": f"toolu_fake_{tool.id}", "name": tool.name, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": f} for f in _fragments(tool.json)]
            streamed.append((start, deltas))
        if not answer.tools:
            deltas = [{"type": "text_delta", "text": p} for p in pieces(answer.text)]
            streamed.append(({"type": "text", "text": ""}, deltas))
        final: JSON = {"delta": {"stop_reason": stop_reason, "stop_sequence": answer.stop}}
        if not no_usage:
            final["usage"] = {"output_tokens": output_tokens}
        items: Items = [("pre", event("message_start", message=message))]
        for index, (start, deltas) in enumerate(streamed):
            if index:
                items.append(("mid", event("content_block_stop", index=index - 1)))
            kind = "mid" if index else "pre"
            items.append((kind, event("content_block_start", index=index, content_block=start)))
            if not index:
                items.append(("pre", event("ping")))
            items += [("content", event("content_block_delta", index=index, delta=d)) for d in deltas]
        items += [
            ("post", event("content_block_stop", index=len(streamed) - 1)),
            ("post", event("message_delta", **final)),
            ("post", event("message_stop")),
        ]
        return await self._stream(call, items, "text/event-stream", usage)

    # -- Gemini -----------------------------------------------------------

    async def _gemini_route(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["tail"].partition(":")
        respond = {
            "generateContent": self._generate,
            "streamGenerateContent": self._generate,
            "countTokens": self._gemini_count_tokens,
        }.get(method)
        if not model or respond is None:
            return await self._not_found(request)

        def validate(call: _Call) -> None:
            call.model = model
            if not isinstance(call.body.get("contents"), list):
                raise _ApiError(400, "* GenerateContentRequest.contents: contents is not specified")
            config = call.body.get("generationConfig", call.body.get("generation_config"))
            count = config.get("candidateCount", 1) if isinstance(config, dict) else 1
            valid = isinstance(count, int) and not isinstance(count, bool)
            if not valid or not 1 <= count <= GEMINI_MAX_CANDIDATES:
                message = "* GenerateContentRequest.generation_config.candidate_count: must be 1-8"
                raise _ApiError(400, message)

        endpoint = _Endpoint(
            "gemini",
            respond,
            validate,
            _gemini_texts,
            _last_user_gemini_text,
            tool_results=_gemini_tool_results,
            user_texts=_gemini_user_texts,
        )
        return await self._handle(request, endpoint)

    async def _gemini_models(self, call: _Call) -> web.StreamResponse:
        methods = ["generateContent", "streamGenerateContent", "countTokens"]
        data = [
            {
                "name": f"models/{m}",
                "displayName": m,
                "supportedGenerationMethods": methods,
            }
            for m in MODELS
            if m.startswith("gemini")
        ]
        return await self._send_json(call, {"models": data})

    async def _gemini_count_tokens(self, call: _Call) -> web.StreamResponse:
        return await self._send_json(call, {"totalTokens": call.prompt_words})

    def _gemini_usage(self, call: _Call, candidates: int) -> JSON:
        prompt = call.prompt_words + call.cached
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates,
        }
        if call.cached:
            usage["cachedContentTokenCount"] = call.cached
        return usage

    async def _generate(self, call: _Call) -> web.StreamResponse:
        answer = self._answer(call)
        count = self._candidate_count(call)
        candidates = answer.output_words * count
        usage = None if call.behaviour.get("no_usage") else self._gemini_usage(call, candidates)
        response_id = f"fake-{call.seq}"

        def response(parts: list[JSON], last: bool) -> JSON:
            data: JSON = {"candidates": []}
            for index in range(count):
                content = {"parts": copy.deepcopy(parts), "role": "model"}
                candidate: JSON = {"content": content, "index": index}
                if last:
                    candidate["finishReason"] = "STOP"
                data["candidates"].append(candidate)
            if last and usage is not None:
                data["usageMetadata"] = usage
            data.update(modelVersion=call.model, responseId=response_id)
            return data

        if answer.tools:
            calls = [{"functionCall": {"name": t.name, "args": t.arguments}} for t in answer.tools]
            chunks = [calls]
        else:
            chunks = [[{"text": p}] for p in pieces(answer.text)] or [[{"text": ""}]]
        if not call.request.path.endswith(":streamGenerateContent"):
            parts = chunks[0] if answer.tools else [{"text": answer.text}]
            return await self._send_json(call, response(parts, last=True), usage=usage)
        bodies = [response(parts, i == len(chunks) - 1) for i, parts in enumerate(chunks)]
        if call.request.query.get("alt") == "sse":
            items: Items = [("content", _sse(b)) for b in bodies]
            return await self._stream(call, items, "text/event-stream", usage)
        items = [("pre", b"[")]
        items += [
            ("content", (b",\r\n" if i else b"") + json.dumps(b).encode()) for i, b in enumerate(bodies)
        ]
        items.append(("post", b"]"))
        return await self._stream(call, items, "application/json", usage)

    @staticmethod
    def _candidate_count(call: _Call) -> int:
        config = call.body.get("generationConfig", call.body.get("generation_config"))
        count = config.get("candidateCount", 1) if isinstance(config, dict) else 1
        return count if isinstance(count, int) and not isinstance(count, bool) else 1


# --------------------------------------------------------------------------
# Running the server
# --------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _start_runner(app: web.Application, sock: socket.socket, access_log: bool) -> web.AppRunner:
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        shutdown_timeout=0.1,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
    )
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner


class FakeUpstream:
    """The fake upstream served from a background thread with its own event loop."""

    def __init__(
        self,
        api_key: str | None = None,
        chunk_delay: float = 0.0,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.state = FakeState()
        self.server = FakeServer(self.state, api_key=api_key, chunk_delay=chunk_delay)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._thread is None:
            raise RuntimeError("FakeUpstream is not started")
        return _url(self.host, self.port)

    @property
    def api_key(self) -> str | None:
        return self.server.api_key

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("FakeUpstream is already started")
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        errors: list[BaseException] = []
        thread = threading.Thread(
            target=self._run,
            args=(loop, sock, ready, errors),
            name="fake-upstream",
            daemon=True,
        )
        thread.start()
        ready.wait(10)
        if errors or not ready.is_set():
            thread.join(5)
            raise RuntimeError("fake upstream failed to start") from (errors[0] if errors else None)
        self._loop, self._thread = loop, thread
        return self

    def _run(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        ready: threading.Event,
        errors: list[BaseException],
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            runner = loop.run_until_complete(_start_runner(self.server.build_app(), sock, access_log=False))
        except BaseException as exc:  # reported to start()
            errors.append(exc)
            sock.close()
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- control ----------------------------------------------------------

    def script(self, *behaviours: JSON) -> None:
        """Queue behaviours, consumed one per API request (FIFO)."""
        self.state.script(behaviours)

    @property
    def requests(self) -> list[JSON]:
        """Snapshot of the recorded requests (oldest first)."""
        return self.state.records()

    def reset(self) -> None:
        """Clear the script queue and the records."""
        self.state.reset()

    def wait_for_requests(self, count: int, timeout: float = 2.0) -> list[JSON]:
        """Wait until at least ``count`` requests were recorded."""
        return self.state.wait_for(lambda records: len(records) >= count, timeout)

    def wait_until_ended(self, index: int = -1, timeout: float = 2.0) -> JSON:
        """Wait until request ``index`` has ended (finished, cut or disconnected)."""

        def ended(records: list[JSON]) -> bool:
            try:
                return records[index]["ended_at"] is not None
            except IndexError:
                return False

        return self.state.wait_for(ended, timeout)[index]


async def serve(host: str, port: int, api_key: str | None = None, chunk_delay: float = 0.0) -> None:
    """Serve until SIGINT/SIGTERM."""
    server = FakeServer(FakeState(), api_key=api_key, chunk_delay=chunk_delay)
    sock = _bind(host, port)
    runner = await _start_runner(server.build_app(), sock, access_log=True)
    print(f"fake upstream listening on {_url(host, sock.getsockname()[1])}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake AI provider upstream.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--api-key", default=None, help="require this key (default: any)")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args.host, args.port, args.api_key, args.chunk_delay))


if __name__ == "__main__":
    main()
