"""OpenAI Chat Completions wire helpers shared by every adapter and both directions:
usage objects, ids, message content, tool-call arguments, data URLs."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import orjson

from providers.base import StreamTranslator, Usage, sse

_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,(?P<data>.*)$", re.S
)


def usage_from_openai(data: dict | None) -> Usage | None:
    if not isinstance(data, dict):
        return None
    details = data.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(data.get("prompt_tokens") or 0),
        completion_tokens=int(data.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )


def usage_dict(usage: Usage) -> dict:
    """OpenAI ``usage`` object for a :class:`Usage`."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def completion_id(message_id: Any) -> str:
    return f"chatcmpl-{message_id}" if message_id else f"chatcmpl-{uuid.uuid4().hex}"


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:image/png;base64,AAAA`` -> ``("image/png", "AAAA")``; None for other URLs."""
    match = _DATA_URL.match(url)
    if not match:
        return None
    return match.group("mime") or "application/octet-stream", match.group("data")


def content_text(content: Any, sep: str = "\n\n") -> str:
    """Text of an OpenAI message content: a string or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, dict) and isinstance(part.get("refusal"), str):
                texts.append(part["refusal"])
        return sep.join(t for t in texts if t)
    return str(content)


def parse_arguments(arguments: Any) -> dict:
    """Tool call arguments (a JSON string) -> a dict; ``{}`` when empty or invalid."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def merge_params(body: dict, extra: dict) -> dict:
    """Merge provider ``extra_params`` into a body; dict values are merged one level deep."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


def put(out: dict, key: str, value) -> None:
    """``out[key] = value`` unless the value is empty (providers refuse empty fields)."""
    if value:
        out[key] = value


def conversation(body: dict):
    """The chat messages other than system/developer ones (which providers with a separate
    system field gather themselves), as (role, message) pairs."""
    for message in body.get("messages") or ():
        if isinstance(message, dict) and message.get("role") not in ("system", "developer"):
            yield message.get("role"), message


class Turns:
    """A conversation for providers that require alternating roles (Anthropic, Gemini):
    consecutive items of the same role are merged into one turn under ``key``."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.turns: list[dict] = []

    def add(self, role: str, items: list[dict]) -> None:
        if not items:
            return
        if self.turns and self.turns[-1]["role"] == role:
            self.turns[-1][self.key].extend(items)
        else:
            self.turns.append({"role": role, self.key: list(items)})


def function_tools(body: dict):
    """The request's function tools as (tool, function, declaration) where the declaration
    holds the name and, when given, the description; callers add the parameters in their
    provider's form."""
    for tool in body.get("tools") or ():
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            continue
        function = tool.get("function") if isinstance(tool.get("function"), dict) else {}
        declaration: dict[str, Any] = {"name": function.get("name") or ""}
        if function.get("description"):
            declaration["description"] = function["description"]
        yield tool, function, declaration


def stop_list(body: dict, *, blank: bool = True) -> list[str]:
    """``stop`` (a string or a list) as a list of non-empty strings; ``blank=False`` also
    drops whitespace-only ones (Anthropic refuses them)."""
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list):
        return []
    return [s for s in stop if isinstance(s, str) and (s if blank else s.strip())]


class ChatChunkReader(StreamTranslator):
    """Base of the translators that read an OpenAI chat stream into another protocol:
    ``data:`` lines parsed, ``[DONE]`` or a clean end after a finish_reason finishing the
    answer. Subclasses implement ``_chunk`` (one chunk object) and ``_finish``, and set
    ``_finish_reason`` when a choice reports one."""

    _finish_reason: str | None = None
    _last_index: int | None = None

    def _tool_delta(self, call: dict, calls: dict[int, dict], fresh: dict) -> tuple[int, dict, str]:
        """One streamed tool-call fragment placed in ``calls`` (index -> state, a copy of
        ``fresh`` for a new call, with ``id``, ``name`` and ``args``): its index, its state
        and its argument text. Servers that omit the index: a new id is a new call."""
        index = call.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            known = {state["id"] for state in calls.values()}
            if (call.get("id") and call["id"] not in known) or self._last_index is None:
                index = len(calls)
            else:
                index = self._last_index
        self._last_index = index
        state = calls.setdefault(index, {**fresh, "args": []})
        if call.get("id") and not state["id"]:
            state["id"] = str(call["id"])
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        if function.get("name") and not state["name"]:
            state["name"] = str(function["name"])
        arguments = function.get("arguments")
        return index, state, arguments if isinstance(arguments, str) else ""

    def _chunk(self, chunk: dict) -> bytes:
        raise NotImplementedError

    def _finish(self) -> bytes:
        raise NotImplementedError

    def _line(self, line: bytes) -> bytes:
        if self.finished or not line.startswith(b"data:"):
            return b""
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return self._finish()
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return b""
        return self._chunk(chunk) if isinstance(chunk, dict) else b""

    def close(self) -> bytes:
        out = super().close()
        if not self.finished and self._finish_reason is not None:
            out += self._finish()  # the upstream ended cleanly after its finish_reason without [DONE]
        return out


class ChatChunkWriter(StreamTranslator):
    """Base of the translators that write OpenAI chat chunks from another protocol's stream
    (Anthropic, Gemini): the chunk envelope, named after the model the client asked for."""

    def __init__(self, *, model: str, include_usage: bool, created: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time()) if created is None else created
        self.id = ""

    def choice_chunk(self, delta: dict, finish_reason: str | None = None, index: int = 0) -> bytes:
        return self.envelope([{"index": index, "delta": delta, "finish_reason": finish_reason}])

    def usage_chunk(self, usage: dict) -> bytes:
        return self.envelope([], usage=usage)

    def envelope(self, choices: list, **extra) -> bytes:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        return sse({**chunk, **extra})


# --- chat as legacy text completions (the gateway's web-search loop on /v1/completions) ---


def prompt_to_chat(body: dict) -> dict:
    """A /v1/completions request as a chat request: the prompt is the user's message."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    chat = {
        key: body[key]
        for key in ("model", "max_tokens", "temperature", "top_p", "stop", "stream", "stream_options", "user")
        if body.get(key) is not None
    }
    chat["messages"] = [{"role": "user", "content": prompt}]
    return chat


def chat_to_completion(data: dict, *, model: str) -> dict:
    """A chat completion as a text completion (choice texts; annotations have no place)."""
    choices = []
    for choice in data.get("choices") or ():
        message = choice.get("message") or {}
        choices.append(
            {
                "index": choice.get("index", 0),
                "text": message.get("content") or "",
                "logprobs": None,
                "finish_reason": choice.get("finish_reason"),
            }
        )
    out = {
        "id": data.get("id") or f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": data.get("created") or int(time.time()),
        "model": model,
        "choices": choices,
    }
    if isinstance(data.get("usage"), dict):
        out["usage"] = data["usage"]
    return out


class ChatStreamToCompletions(ChatChunkReader):
    """OpenAI chat.completion.chunk SSE -> legacy text_completion SSE chunks."""

    def __init__(self, *, model: str, include_usage: bool) -> None:
        super().__init__()
        self.model = model
        self.include_usage = include_usage

    def _chunk(self, chunk: dict) -> bytes:
        if "error" in chunk and not chunk.get("choices"):
            self.error = chunk["error"]
            self.finished = True
            return b"data: " + orjson.dumps(chunk) + b"\n\n"
        choices = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content") or ""
            if text:
                self.collect(text)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
            if text or choice.get("finish_reason"):
                choices.append(
                    {
                        "index": choice.get("index", 0),
                        "text": text,
                        "logprobs": None,
                        "finish_reason": choice.get("finish_reason"),
                    }
                )
        out: dict[str, Any] = {
            "id": chunk.get("id", ""),
            "object": "text_completion",
            "created": chunk.get("created", 0),
            "model": self.model,
            "choices": choices,
        }
        if chunk.get("usage"):
            self.usage = usage_from_openai(chunk["usage"])
            if self.include_usage:
                out["usage"] = chunk["usage"]
        if not choices and "usage" not in out:
            return b""
        return b"data: " + orjson.dumps(out) + b"\n\n"

    def _finish(self) -> bytes:
        self.finished = True
        return b"data: [DONE]\n\n"
