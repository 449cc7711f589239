"""The inbound Anthropic Messages protocol (``/v1/messages``) on top of any chat upstream.

Anthropic clients (Claude Code, the Anthropic SDKs) send Messages requests; these are
turned into OpenAI chat requests with :func:`messages_to_chat`, sent through the normal
relay (whatever the upstream is), and the chat answer is turned back into a Messages
answer with :func:`chat_to_messages` or, for streams, :class:`ChatStreamToMessages`.

Translation notes:

* ``thinking``/``redacted_thinking`` blocks on input are dropped (their signatures only
  mean something to Anthropic), as are server-tool blocks and server tools
  (``web_search_*``...), which have no chat equivalent. The ``thinking`` request option
  and ``top_k`` are dropped too.
* ``cache_control`` markers are dropped unless ``keep_cache_control=True`` (useful when
  the upstream is Anthropic again: OpenAI-style upstreams may reject unknown fields).
* ``tool_result`` blocks become ``tool`` messages placed right after the assistant turn;
  their images (chat tool messages cannot hold images) move to the user message that
  follows. ``is_error`` results are prefixed with ``Error: ``.
* ``reasoning_content`` in answers becomes ``thinking`` blocks only with ``thinking=True``
  (without a signature, so it cannot be replayed to Anthropic itself).
* When the answer contains tool calls but the upstream said ``stop``, ``stop_reason`` is
  ``tool_use`` anyway (some OpenAI-compatible servers report ``stop``).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from providers.base import Usage

from .openai_chat import ChatChunkReader, usage_from_openai

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_KNOWN_ERROR_TYPES = set(ERROR_TYPES.values())
USER_MAX = 64
# Claude Code's first system block ("x-anthropic-billing-header: cc_version=...; cch=...;"):
# metadata for Anthropic, changed on every request; never prompt text for anyone else
BILLING_HEADER = "x-anthropic-billing-header"
_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def tool_id(raw: Any) -> str:
    """A tool_use id Anthropic accepts (``^[a-zA-Z0-9_-]+$``)."""
    text = _BAD_ID_CHARS.sub("_", str(raw or ""))
    return text or "toolu_" + uuid.uuid4().hex[:24]


def usage_from_anthropic(data: dict | None) -> Usage:
    data = data if isinstance(data, dict) else {}
    cache_read = int(data.get("cache_read_input_tokens") or 0)
    cache_write = int(data.get("cache_creation_input_tokens") or 0)
    return Usage(
        prompt_tokens=int(data.get("input_tokens") or 0) + cache_read + cache_write,
        completion_tokens=int(data.get("output_tokens") or 0),
        cached_tokens=cache_read,
    )


# --------------------------------------------------------------------------- errors


def anthropic_error(status: int, message: str) -> dict:
    """An Anthropic error body for an HTTP status."""
    error_type = ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": error_type, "message": message}}


def sse_event(name: str, data: dict) -> bytes:
    """One Anthropic-style SSE event (``event:`` line + ``data:`` line)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def anthropic_error_event(status: int, message: str) -> bytes:
    """The ``event: error`` a relay sends when a stream fails (e.g. the upstream was cut)."""
    return sse_event("error", anthropic_error(status, message))


# --------------------------------------------------------------------------- request


def _cache(part: dict, block: dict, keep: bool) -> dict:
    if keep and isinstance(block.get("cache_control"), dict):
        part["cache_control"] = block["cache_control"]
    return part


def _image_part(block: dict) -> dict | None:
    source = block.get("source") or {}
    if source.get("type") == "base64" and source.get("data"):
        url = f"data:{source.get('media_type') or 'image/png'};base64,{source['data']}"
    elif source.get("type") == "url" and source.get("url"):
        url = source["url"]
    else:
        return None
    return {"type": "image_url", "image_url": {"url": url}}


def _document_part(block: dict) -> dict | None:
    source = block.get("source") or {}
    if source.get("type") == "text" and source.get("data"):
        return {"type": "text", "text": str(source["data"])}
    if source.get("type") == "base64" and source.get("data"):
        media = source.get("media_type") or "application/pdf"
        filename = block.get("title") or "document.pdf"
        return {
            "type": "file",
            "file": {"filename": filename, "file_data": f"data:{media};base64,{source['data']}"},
        }
    return None


def _blocks(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _parts_content(parts: list[dict], sep: str = "\n\n") -> str | list[dict] | None:
    """Chat content for parts: a plain string when it is only text (widest compatibility)."""
    if not parts:
        return None
    if all(p["type"] == "text" and "cache_control" not in p for p in parts):
        return sep.join(p["text"] for p in parts)
    return parts


def _tool_result_text(block: dict) -> tuple[str, list[dict]]:
    content = block.get("content")
    images: list[dict] = []
    if isinstance(content, str):
        text = content
    else:
        texts = []
        for item in _blocks(content):
            if item.get("type") == "text" and item.get("text"):
                texts.append(item["text"])
            elif item.get("type") == "image":
                image = _image_part(item)
                if image:
                    images.append(image)
            elif item.get("type") == "document":
                doc = _document_part(item)
                if doc and doc["type"] == "text":
                    texts.append(doc["text"])
        text = "\n\n".join(texts)
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    return text, images


def _user_messages(content: Any, keep_cache: bool) -> list[dict]:
    tool_messages: list[dict] = []
    parts: list[dict] = []
    after: list[dict] = []  # system content that came with the turn
    for block in _blocks(content):
        kind = block.get("type")
        if kind == "text":
            if block.get("text"):
                parts.append(_cache({"type": "text", "text": block["text"]}, block, keep_cache))
        elif kind == "image":
            image = _image_part(block)
            if image:
                parts.append(_cache(image, block, keep_cache))
        elif kind == "document":
            doc = _document_part(block)
            if doc:
                parts.append(_cache(doc, block, keep_cache))
        elif kind == "tool_result":
            text, images = _tool_result_text(block)
            tool_messages.append(
                {"role": "tool", "tool_call_id": str(block.get("tool_use_id") or ""), "content": text}
            )
            parts.extend(images)
        elif kind == "mid_conv_system":
            system = _mid_conversation_system([block], keep_cache)
            if system:
                after.append(system)
    out = tool_messages
    user_content = _parts_content(parts)
    if user_content:
        out.append({"role": "user", "content": user_content})
    return out + after


def _assistant_message(content: Any) -> dict | None:
    texts: list[str] = []
    calls: list[dict] = []
    for block in _blocks(content):
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append(
                {
                    "id": str(block.get("id") or ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name") or "",
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    text = "".join(texts)
    if not text and not calls:
        return None
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _system_message(system: Any, keep_cache: bool) -> dict | None:
    parts = [
        _cache({"type": "text", "text": block["text"]}, block, keep_cache)
        for block in _blocks(system)
        if block.get("type", "text") in ("text", "mid_conv_system")
        and isinstance(block.get("text"), str)
        and block["text"]
        and not block["text"].startswith(BILLING_HEADER)
    ]
    content = _parts_content(parts)
    return {"role": "system", "content": content} if content else None


def _mid_conversation_system(content: Any, keep_cache: bool) -> dict | None:
    """A ``role: "system"`` message (or ``mid_conv_system`` block) inside ``messages``:
    a system message at the same place of the chat conversation."""
    blocks = []
    for block in _blocks(content):
        if block.get("type") == "mid_conv_system":
            blocks.extend(_blocks(block.get("content")))
        else:
            blocks.append(block)
    return _system_message(blocks, keep_cache)


def wants_thinking(body: dict) -> bool:
    """The client asked for thinking (``enabled`` with a budget, or ``adaptive``)."""
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def shows_thinking(body: dict) -> bool:
    """Thinking asked for and its text wanted (``display: "omitted"`` asks for none)."""
    return wants_thinking(body) and body["thinking"].get("display") != "omitted"


def reasoning_effort(body: dict) -> str:
    """An OpenAI ``reasoning_effort`` for the client's thinking request: the budget for
    ``enabled`` (under 4k tokens low, under 16k medium, else high), the requested effort
    for ``adaptive`` (``output_config.effort``; xhigh and max are high), else medium."""
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and not isinstance(budget, bool):
            return "low" if budget < 4096 else "medium" if budget < 16384 else "high"
        return "medium"
    effort = (
        (body.get("output_config") or {}).get("effort")
        if isinstance(body.get("output_config"), dict)
        else None
    )
    return {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}.get(
        effort, "medium"
    )


def _tools(tools: Any, keep_cache: bool) -> list[dict]:
    out = []
    for tool in tools or ():
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom") or not tool.get("name"):
            continue  # server tools (web_search_..., bash_..., ...) have no chat equivalent
        function: dict[str, Any] = {"name": tool["name"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        out.append(_cache({"type": "function", "function": function}, tool, keep_cache))
    return out


def messages_to_chat(body: dict, *, keep_cache_control: bool = False, reasoning: bool = False) -> dict:
    """Anthropic Messages request -> OpenAI chat.completions request.

    ``reasoning``: the upstream model reasons, so a client's thinking request becomes a
    ``reasoning_effort``. ``stop_sequences`` are not sent: the gateway matches them in the
    answer itself (the chat protocol cannot tell a stop sequence from a natural end)."""
    messages: list[dict] = []
    system = _system_message(body.get("system"), keep_cache_control)
    if system:
        messages.append(system)
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role == "assistant":
            converted = _assistant_message(message.get("content"))
            if converted:
                messages.append(converted)
        elif role == "system":
            converted = _mid_conversation_system(message.get("content"), keep_cache_control)
            if converted:
                messages.append(converted)
        else:
            messages.extend(_user_messages(message.get("content"), keep_cache_control))
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if reasoning and wants_thinking(body):
        out["reasoning_effort"] = reasoning_effort(body)
    tools = _tools(body.get("tools"), keep_cache_control)
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice") or {}
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind == "auto":
            out["tool_choice"] = "auto"
        elif kind == "any":
            out["tool_choice"] = "required"
        elif kind == "none":
            out["tool_choice"] = "none"
        elif kind == "tool" and choice.get("name"):
            out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        if isinstance(choice, dict) and choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and metadata.get("user_id"):
        user = str(metadata["user_id"])
        # OpenAI caps ``user`` at 64 characters; Claude Code's ids are longer: keep them stable
        out["user"] = user if len(user) <= USER_MAX else hashlib.sha256(user.encode()).hexdigest()[:USER_MAX]
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


# --------------------------------------------------------------------------- response


def message_id(chat_id: Any) -> str:
    """``chatcmpl-xyz`` -> ``msg_xyz`` (an id that already is ``msg_...`` is kept)."""
    raw = str(chat_id or "")
    if raw.startswith("chatcmpl-"):
        raw = raw[len("chatcmpl-") :]
    if not raw:
        return "msg_" + uuid.uuid4().hex
    return raw if raw.startswith("msg_") else f"msg_{raw}"


def stop_reason(finish_reason: Any, *, has_tool_use: bool) -> str:
    reason = STOP_REASONS.get(str(finish_reason), "end_turn")
    return "tool_use" if has_tool_use and reason == "end_turn" else reason


def messages_usage(usage: Usage) -> dict:
    return {
        "input_tokens": max(usage.prompt_tokens - usage.cached_tokens, 0),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def find_stop(text: str, sequences: tuple[str, ...]) -> tuple[int, str] | None:
    """The earliest stop sequence in ``text``: (its position, the sequence)."""
    best: tuple[int, str] | None = None
    for sequence in sequences:
        if not sequence:
            continue
        at = text.find(sequence)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, sequence)
    return best


def _arguments(raw: Any) -> dict:
    """Complete tool-call arguments as a dict; a ValueError when they are not a JSON object
    (a wrong input must never reach the client as ``{}``)."""
    if isinstance(raw, dict):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    try:
        parsed = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        raise ValueError("tool call arguments are not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ValueError("tool call arguments are not a JSON object")
    return parsed


def chat_to_messages(
    resp: dict, *, model: str, thinking: bool = False, stop_sequences: tuple[str, ...] = ()
) -> dict:
    """OpenAI chat.completion -> Anthropic Messages response.

    ``stop_sequences`` are matched in the text: the answer ends before the first one, with
    ``stop_reason: "stop_sequence"`` and the sequence (the chat protocol cannot say it)."""
    choices = resp.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if thinking and isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text") or "" for p in text if isinstance(p, dict))
    text = str(text) if text else ""
    stop = find_stop(text, stop_sequences) if text and stop_sequences else None
    if stop is not None:
        text = text[: stop[0]]
    if text:
        content.append({"type": "text", "text": text})
    elif message.get("refusal"):
        content.append({"type": "text", "text": str(message["refusal"])})
    for call in message.get("tool_calls") or () if stop is None else ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": tool_id(call.get("id")),
                "name": function.get("name") or "",
                "input": _arguments(function.get("arguments")),
            }
        )
    has_tool_use = any(block["type"] == "tool_use" for block in content)
    usage = usage_from_openai(resp.get("usage")) or Usage()
    if stop is not None:
        reason, sequence = "stop_sequence", stop[1]
    else:
        reason, sequence = stop_reason(choice.get("finish_reason"), has_tool_use=has_tool_use), None
    return {
        "id": message_id(resp.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": messages_usage(usage),
    }


# --------------------------------------------------------------------------- stream


class ChatStreamToMessages(ChatChunkReader):
    """OpenAI chat.completion.chunk SSE -> Anthropic Messages SSE.

    Only the first choice is translated.

    * ``message_start`` carries ``input_tokens`` (counted by the caller; the chat protocol
      reports usage only at the end); ``message_delta`` gives the upstream's figures.
    * Reasoning deltas (``reasoning_content`` or ``reasoning``) become a thinking block
      when ``thinking`` (the client asked for it).
    * Tool calls: Anthropic blocks are sequential and cannot be reopened, chat tool-call
      fragments may interleave by index. The first call streams live; a call whose
      arguments are already a complete JSON object is closed when the next one starts;
      while a live call is incomplete, fragments of other calls are kept and each is sent
      as one whole block at the end. Every input is checked to be a JSON object; a
      fragment that cannot be placed, or an input that is not JSON, ends the stream with
      ``event: error`` (never a silently wrong input).
    * ``stop_sequences`` are matched in the text as it streams (a possible beginning of a
      sequence is held back); a match ends the message with ``stop_reason:
      "stop_sequence"`` and sets ``cut_upstream`` so the relay stops the upstream.

    ``message_delta``/``message_stop`` are held until the usage chunk or ``[DONE]`` (or a
    clean end after a finish_reason). A stream cut before any of these is not
    ``finished`` and ``close()`` sends nothing final: the relay then sends the protocol's
    error event. An upstream error line becomes ``event: error`` (``finished`` is True,
    ``error`` holds the upstream error).
    """

    def __init__(
        self,
        *,
        model: str,
        input_tokens: int = 0,
        message_id: str | None = None,
        thinking: bool = False,
        stop_sequences: tuple[str, ...] = (),
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.input_tokens = input_tokens
        self.message_id = message_id
        self.thinking = thinking
        self.stop_sequences = tuple(s for s in stop_sequences if s)
        self.count_tokens = count_tokens
        self._started = False
        self._next_block = 0
        self._open: tuple[str, int] | None = None  # (kind, tool index) of the open block
        self._tools: dict[int, dict[str, Any]] = {}
        self._live: int | None = None  # the tool call streaming live in the open block
        self._finish_reason: str | None = None
        self._has_tool_use = False
        self._held = ""  # text that may be the start of a stop sequence
        self._blocks_done = False
        self._shown: list[str] = []  # text sent, for a local output count
        self.usage_extra: dict = {}  # merged into message_delta's usage (e.g. server_tool_use)

    # -- block helpers
    def _start(self, chunk: dict | None = None) -> bytes:
        if self._started:
            return b""
        self._started = True
        if not self.message_id:
            self.message_id = message_id((chunk or {}).get("id"))
        usage = {"input_tokens": self.input_tokens, "output_tokens": 0}
        message = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return sse_event("message_start", {"type": "message_start", "message": message})

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        kind, key = self._open
        if kind == "tool":
            self._tools[key]["closed"] = True
            self._live = None
        self._open = None
        index = self._next_block - 1
        return sse_event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _open_block(self, kind: str, block: dict, key: int = -1) -> bytes:
        out = self._close_block()
        index = self._next_block
        self._next_block += 1
        self._open = (kind, key)
        return out + sse_event(
            "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
        )

    def _delta(self, delta: dict) -> bytes:
        index = self._next_block - 1
        return sse_event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def _emit_text(self, kind: str, text: str) -> bytes:
        if not text:
            return b""
        out = b""
        if self._open != (kind, -1):
            if self._open is not None and self._open[0] == "tool":
                out = self._close_block()
            block = (
                {"type": "text", "text": ""}
                if kind == "text"
                else {"type": "thinking", "thinking": "", "signature": ""}
            )
            out += self._open_block(kind, block)
        self._shown.append(text)
        if kind == "text":
            return out + self._delta({"type": "text_delta", "text": text})
        return out + self._delta({"type": "thinking_delta", "thinking": text})

    def _text(self, text: str) -> bytes:
        if not self.stop_sequences:
            return self._emit_text("text", text)
        buffer = self._held + text
        stop = find_stop(buffer, self.stop_sequences)
        if stop is not None:
            self._held = ""
            self.cut_upstream = True
            return self._emit_text("text", buffer[: stop[0]]) + self._finish(stop_sequence=stop[1])
        hold = 0
        for sequence in self.stop_sequences:
            for size in range(min(len(sequence) - 1, len(buffer)), hold, -1):
                if buffer.endswith(sequence[:size]):
                    hold = size
                    break
        self._held = buffer[len(buffer) - hold :] if hold else ""
        return self._emit_text("text", buffer[: len(buffer) - hold])

    def add_blocks(self, blocks: list[dict]) -> bytes:
        """Whole blocks made by the gateway itself (``server_tool_use``,
        ``web_search_tool_result``): each opened with its content and closed at once."""
        out = self._start()
        if self._held:
            held, self._held = self._held, ""
            out += self._emit_text("text", held)
        out += self._close_block()
        for block in blocks:
            out += self._open_block("server", block) + self._close_block()
        return out

    def cite(self, citations: list[dict]) -> bytes:
        """``citations_delta`` events on the text block being streamed (none open: nothing)."""
        if self._open != ("text", -1):
            return b""
        return b"".join(self._delta({"type": "citations_delta", "citation": c}) for c in citations)

    def _fail(self, message: str) -> bytes:
        self.error = {"type": "api_error", "message": message}
        self.finished = True
        self.cut_upstream = True
        return self._start() + self._close_block() + anthropic_error_event(502, message)

    # -- tool calls
    @staticmethod
    def _complete(state: dict) -> bool:
        raw = "".join(state["args"])
        try:
            return isinstance(orjson.loads(raw), dict) if raw.strip() else False
        except orjson.JSONDecodeError:
            return False

    def _open_tool(self, index: int, state: dict) -> bytes:
        block = {
            "type": "tool_use",
            "id": tool_id(state["id"] or f"toolu_{self.message_id}_{index}"),
            "name": state["name"] or "",
            "input": {},
        }
        state["emitted"] = True
        self._has_tool_use = True
        out = self._open_block("tool", block, index)
        self._live = index
        sent = "".join(state["args"])
        if sent:
            out += self._delta({"type": "input_json_delta", "partial_json": sent})
        return out

    def _tool(self, call: dict) -> bytes:
        fresh = {"id": None, "name": None, "emitted": False, "closed": False}
        index, state, arguments = self._tool_delta(call, self._tools, fresh)
        if arguments:
            self.collect(arguments)
        if state["closed"]:
            if arguments.strip():
                return self._fail(
                    f"The upstream sent more arguments for tool call {index} after they were complete."
                )
            return b""
        if arguments:
            state["args"].append(arguments)
        if self._live == index:
            return self._delta({"type": "input_json_delta", "partial_json": arguments}) if arguments else b""
        if state["emitted"] or not state["name"]:
            return b""
        if self._live is not None:
            if not self._complete(self._tools[self._live]):
                return b""  # interleaved: this call is sent whole at the end
            out = self._close_block()
        else:
            out = b""
        if any(not s["emitted"] and i < index for i, s in self._tools.items()):
            return out  # an earlier call is waiting: keep the order, send both at the end
        return out + self._open_tool(index, state)

    def _flush_tools(self) -> bytes:
        out = b""
        for index, state in sorted(self._tools.items()):
            if not state["emitted"]:
                out += self._open_tool(index, state) + self._close_block()
        return out

    def _end_blocks(self) -> bytes:
        """The answer is complete: check the tool inputs, send what was held, close."""
        if self._blocks_done:
            return b""
        for index, state in sorted(self._tools.items()):
            try:
                _arguments("".join(state["args"]))
            except ValueError:
                return self._fail(f"The upstream's arguments for tool call {index} are not a JSON object.")
        self._blocks_done = True
        out = self._start()
        if self._held:
            held, self._held = self._held, ""
            out += self._emit_text("text", held)
        return out + self._close_block() + self._flush_tools() + self._close_block()

    def _finish(self, stop_sequence: str | None = None) -> bytes:
        if self.finished:
            return b""
        out = self._end_blocks()
        if self.finished:  # the check failed: the error event ended the stream
            return out
        self.finished = True
        if self.usage is not None:
            usage = messages_usage(self.usage)
            del usage["cache_creation_input_tokens"]
        else:
            shown = "".join(self._shown)
            counted = self.count_tokens(shown) if self.count_tokens and shown else 0
            usage = {"input_tokens": self.input_tokens, "output_tokens": counted}
        usage.update(self.usage_extra)
        if stop_sequence is not None:
            delta = {"stop_reason": "stop_sequence", "stop_sequence": stop_sequence}
        else:
            reason = stop_reason(self._finish_reason, has_tool_use=self._has_tool_use)
            delta = {"stop_reason": reason, "stop_sequence": None}
        out += sse_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        return out + sse_event("message_stop", {"type": "message_stop"})

    # -- chunks
    def _chunk(self, chunk: dict) -> bytes:
        if "error" in chunk and not chunk.get("choices"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else error
            error_type = error.get("type") if isinstance(error, dict) else None
            self.error = error if isinstance(error, dict) else {"message": str(error)}
            self.finished = True
            body = {
                "type": "error",
                "error": {
                    "type": error_type if error_type in _KNOWN_ERROR_TYPES else "api_error",
                    "message": str(message or "upstream error"),
                },
            }
            return sse_event("error", body)
        out = self._start(chunk)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                self.collect(reasoning)  # generated (and billed) whether shown or not
                if self.thinking:
                    out += self._emit_text("thinking", reasoning)
            content = delta.get("content")
            if isinstance(content, str) and content:
                self.collect(content)
                out += self._text(content)
                if self.finished:
                    return out
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    out += self._tool(call)
                    if self.finished:
                        return out
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
                out += self._end_blocks()
                if self.finished:
                    return out
        if chunk.get("usage"):
            self.usage = usage_from_openai(chunk["usage"])
            if self._finish_reason is not None:
                out += self._finish()
        return out


__all__ = [
    "ChatStreamToMessages",
    "anthropic_error",
    "anthropic_error_event",
    "chat_to_messages",
    "messages_to_chat",
]
