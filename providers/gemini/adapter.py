"""Google Gemini API upstream (``POST {base_url}/models/{model}:generateContent``).

Translation notes (best effort where the protocols differ):

* ``system``/``developer`` messages become ``systemInstruction``; consecutive turns with
  the same role are merged (parallel function responses must share one turn).
* Tool messages become ``functionResponse`` parts named after the matching earlier tool
  call (looked up by ``tool_call_id``); the response is ``{"content": <parsed JSON or text>}``.
* Function declarations and ``responseSchema`` go through :func:`gemini_schema`, which
  keeps the OpenAPI subset Gemini accepts: ``$ref``s into ``$defs``/``definitions`` are
  inlined, ``["x", "null"]`` types and null ``anyOf`` members become ``nullable``,
  ``oneOf`` becomes ``anyOf``, ``const`` becomes a one-value enum and everything else
  (``additionalProperties``, ``$schema``, ``default``, ``examples``...) is dropped. A
  function without parameters is declared without ``parameters``.
* Gemini 3 models require the ``thoughtSignature`` of a function call to be sent back.
  Responses carry it to the client in ``tool_calls[].extra_content.google.thought_signature``
  (like Google's own OpenAI-compatible endpoint); requests send it back from there, or the
  documented ``skip_thought_signature_validator`` sentinel on the first call of a turn.
* Gemini does not give function calls ids (older models) so they get ``call_<n>`` ids,
  made unique per response with the ``responseId`` (``call_<responseId>_<n>``).
* Parts marked ``thought`` become the non-standard ``reasoning_content``.
"""

from __future__ import annotations

import mimetypes
import time
import uuid
from typing import Any

import orjson

from providers.base import (
    SSE_DONE,
    Adapter,
    Capability,
    StreamTranslator,
    Target,
    UpstreamModel,
    UpstreamRequest,
    Usage,
    listed_models,
    sse,
)
from providers.formats.openai_chat import (
    ChatChunkWriter,
    Turns,
    completion_id,
    content_text,
    conversation,
    function_tools,
    merge_params,
    parse_data_url,
    put,
    stop_list,
    usage_dict,
)

SIGNATURE_SENTINEL = "skip_thought_signature_validator"
# reasoning_effort -> thinking budget (tokens); thoughts come back as reasoning_content
THINKING_BUDGETS = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "content_filter",
}

_SCHEMA_KEYS = {
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "items",
    "properties",
    "required",
    "anyOf",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minProperties",
    "maxProperties",
    "pattern",
}
_FORMATS = {"string": {"enum", "date-time"}, "number": {"float", "double"}, "integer": {"int32", "int64"}}
_MAX_REF_DEPTH = 8


# --------------------------------------------------------------------------- schema


def gemini_schema(schema: Any) -> dict:
    """A JSON schema reduced to the OpenAPI subset Gemini's ``Schema`` accepts."""
    if not isinstance(schema, dict):
        return {}
    defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    return _clean(schema, defs, 0)


def _resolve(ref: str, defs: dict) -> dict | None:
    for prefix in ("#/$defs/", "#/definitions/"):
        if ref.startswith(prefix):
            found = defs.get(ref[len(prefix) :])
            return found if isinstance(found, dict) else None
    return None


def _clean(schema: Any, defs: dict, depth: int) -> dict:
    if not isinstance(schema, dict):
        return {}
    if "$ref" in schema:
        target = _resolve(str(schema["$ref"]), defs) if depth < _MAX_REF_DEPTH else None
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **rest} if target is not None else {"type": "object", **rest}
        depth += 1
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _clean(part, defs, depth)
            for key, value in part.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
                else:
                    merged.setdefault(key, value)
        schema = merged
    out: dict[str, Any] = {}
    kind = schema.get("type")
    if isinstance(kind, list):
        types = [t for t in kind if t != "null"]
        if len(types) < len(kind):
            out["nullable"] = True
        kind = types[0] if types else None
    if isinstance(kind, str) and kind != "null":
        out["type"] = kind
    for key, value in schema.items():
        if key not in _SCHEMA_KEYS or key in ("type", "properties", "items", "anyOf", "enum", "format"):
            continue
        out[key] = value
    if "const" in schema:
        out["enum"] = [schema["const"]]
    elif isinstance(schema.get("enum"), list):
        out["enum"] = [v for v in schema["enum"] if v is not None]
        if len(out["enum"]) < len(schema["enum"]):
            out["nullable"] = True
    if "enum" in out:
        if out.get("type", "string") != "string":
            del out["enum"]  # Gemini only has string enums
        else:
            out["enum"] = [v if isinstance(v, str) else orjson.dumps(v).decode() for v in out["enum"]]
            out["type"] = "string"
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS.get(str(out.get("type")), set()):
        out["format"] = fmt
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {name: _clean(sub, defs, depth) for name, sub in schema["properties"].items()}
        if "required" in out:
            out["required"] = [r for r in out["required"] if r in out["properties"]]
            if not out["required"]:
                del out["required"]
    elif "required" in out:
        del out["required"]
    items = schema.get("items")
    if isinstance(items, list):
        items = items[0] if items else None
    if isinstance(items, dict):
        out["items"] = _clean(items, defs, depth)
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(alternatives, list):
        options = []
        for option in alternatives:
            if isinstance(option, dict) and option.get("type") == "null":
                out["nullable"] = True
            else:
                options.append(_clean(option, defs, depth))
        if len(options) == 1 and "type" not in out:
            nullable = out.get("nullable")
            out = {**options[0], **out}
            if nullable:
                out["nullable"] = True
        elif options:
            out["anyOf"] = options
    return out


# --------------------------------------------------------------------------- request


def _media_part(url: str, default_mime: str) -> dict:
    parsed = parse_data_url(url)
    if parsed:
        mime, data = parsed
        return {"inlineData": {"mimeType": mime, "data": data}}
    mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or default_mime
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _parts(content: Any) -> list[dict]:
    """OpenAI message content -> Gemini parts (no empty text parts)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        return [{"text": str(content)}]
    parts: list[dict] = []
    for part in content:
        if isinstance(part, str):
            if part:
                parts.append({"text": part})
            continue
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if isinstance(part.get("text"), str) and kind in ("text", "input_text", "output_text", None):
            if part["text"]:
                parts.append({"text": part["text"]})
        elif kind == "refusal" and part.get("refusal"):
            parts.append({"text": str(part["refusal"])})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str) and url:
                parts.append(_media_part(url, "image/jpeg"))
        elif kind == "input_audio" and isinstance(part.get("input_audio"), dict):
            audio = part["input_audio"]
            if audio.get("data"):
                mime = f"audio/{audio.get('format') or 'wav'}"
                parts.append({"inlineData": {"mimeType": mime, "data": audio["data"]}})
        elif kind == "file" and isinstance(part.get("file"), dict):
            data = part["file"].get("file_data")
            if isinstance(data, str) and data:
                parts.append(_media_part(data, "application/pdf"))
    return parts


def _response_value(content: Any) -> Any:
    text = content_text(content, sep="")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _thought_signature(call: dict) -> str | None:
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) and signature else None


def _contents(body: dict) -> list[dict]:
    turns = Turns("parts")
    add = turns.add
    names: dict[str, str] = {}
    for role, message in conversation(body):
        if role == "assistant":
            parts = _parts(message.get("content"))
            for position, call in enumerate(message.get("tool_calls") or ()):
                function = call.get("function") or {}
                name = function.get("name") or ""
                if call.get("id"):
                    names[str(call["id"])] = name
                arguments = function.get("arguments")
                try:
                    args = orjson.loads(arguments) if isinstance(arguments, str) and arguments.strip() else {}
                except orjson.JSONDecodeError:
                    args = {}
                part: dict[str, Any] = {
                    "functionCall": {"name": name, "args": args if isinstance(args, dict) else {}}
                }
                signature = _thought_signature(call)
                if signature or position == 0:
                    part["thoughtSignature"] = signature or SIGNATURE_SENTINEL
                parts.append(part)
            add("model", parts)
        elif role == "tool":
            call_id = str(message.get("tool_call_id") or "")
            name = names.get(call_id) or message.get("name") or "function"
            response = {"content": _response_value(message.get("content"))}
            add("user", [{"functionResponse": {"name": name, "response": response}}])
        else:
            add("user", _parts(message.get("content")))
    return turns.turns


def _tools(body: dict) -> list[dict]:
    declarations = []
    for _, function, declaration in function_tools(body):
        parameters = gemini_schema(function.get("parameters"))
        if parameters.get("properties"):
            declaration["parameters"] = parameters
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config(body: dict) -> dict | None:
    choice = body.get("tool_choice")
    if choice == "auto":
        return {"functionCallingConfig": {"mode": "AUTO"}}
    if choice == "required":
        return {"functionCallingConfig": {"mode": "ANY"}}
    if choice == "none":
        return {"functionCallingConfig": {"mode": "NONE"}}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if name:
            return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    return None


def _generation_config(body: dict) -> dict:
    config: dict[str, Any] = {}
    if body.get("temperature") is not None:
        config["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        config["topP"] = body["top_p"]
    if body.get("top_k") is not None:
        config["topK"] = body["top_k"]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        config["maxOutputTokens"] = int(max_tokens)
    sequences = stop_list(body)
    if sequences:
        config["stopSequences"] = sequences
    if body.get("n") is not None and int(body["n"]) != 1:
        config["candidateCount"] = int(body["n"])
    effort = body.get("reasoning_effort")
    if effort in THINKING_BUDGETS:  # asked for by the relay only for reasoning models
        config["thinkingConfig"] = {"includeThoughts": True, "thinkingBudget": THINKING_BUDGETS[effort]}
    if body.get("presence_penalty") is not None:
        config["presencePenalty"] = body["presence_penalty"]
    if body.get("frequency_penalty") is not None:
        config["frequencyPenalty"] = body["frequency_penalty"]
    if body.get("seed") is not None:
        config["seed"] = body["seed"]
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        spec = fmt.get("json_schema")
        if fmt["type"] == "json_schema" and isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            config["responseSchema"] = gemini_schema(spec["schema"])
    return config


def openai_to_gemini(body: dict) -> dict:
    """OpenAI chat.completions request body -> Gemini GenerateContentRequest."""
    out: dict[str, Any] = {"contents": _contents(body)}
    system = [
        text
        for message in body.get("messages") or ()
        if isinstance(message, dict) and message.get("role") in ("system", "developer")
        for text in [content_text(message.get("content"))]
        if text
    ]
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    tools = _tools(body)
    if tools:
        out["tools"] = tools
        put(out, "toolConfig", _tool_config(body))
    put(out, "generationConfig", _generation_config(body))
    return out


# --------------------------------------------------------------------------- response


def usage_from_gemini(data: dict | None) -> Usage | None:
    if not isinstance(data, dict):
        return None
    return Usage(
        prompt_tokens=int(data.get("promptTokenCount") or 0) + int(data.get("toolUsePromptTokenCount") or 0),
        completion_tokens=int(data.get("candidatesTokenCount") or 0)
        + int(data.get("thoughtsTokenCount") or 0),
        cached_tokens=int(data.get("cachedContentTokenCount") or 0),
    )


def _usage_dict(usage: Usage, raw: dict | None) -> dict:
    out = usage_dict(usage)
    thoughts = int((raw or {}).get("thoughtsTokenCount") or 0)
    if thoughts:
        out["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return out


class _CallIds:
    def __init__(self, response_id: Any) -> None:
        self.prefix = f"call_{response_id}_" if response_id else f"call_{uuid.uuid4().hex[:12]}_"
        self.count = 0

    def next(self, call: dict) -> str:
        if call.get("id"):
            return str(call["id"])
        value = f"{self.prefix}{self.count}"
        self.count += 1
        return value


def _tool_call(part: dict, ids: _CallIds) -> dict:
    call = part.get("functionCall") or {}
    out: dict[str, Any] = {
        "id": ids.next(call),
        "type": "function",
        "function": {
            "name": call.get("name") or "",
            "arguments": orjson.dumps(call.get("args") or {}).decode(),
        },
    }
    if part.get("thoughtSignature"):
        out["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return out


def finish_reason(reason: Any, *, has_calls: bool) -> str:
    mapped = FINISH_REASONS.get(str(reason), "stop")
    return "tool_calls" if mapped == "stop" and has_calls else mapped


def gemini_to_openai(payload: dict, *, model: str, created: int | None = None) -> tuple[dict, Usage]:
    """Gemini GenerateContentResponse -> OpenAI chat.completion (plus usage)."""
    ids = _CallIds(payload.get("responseId"))
    choices = []
    for position, candidate in enumerate(payload.get("candidates") or ()):
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[dict] = []
        for part in (candidate.get("content") or {}).get("parts") or ():
            if "functionCall" in part:
                calls.append(_tool_call(part, ids))
            elif isinstance(part.get("text"), str):
                (thoughts if part.get("thought") else texts).append(part["text"])
        text = "".join(texts)
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
        if calls:
            message["tool_calls"] = calls
        if thoughts:
            message["reasoning_content"] = "".join(thoughts)
        choices.append(
            {
                "index": int(candidate.get("index", position)),
                "message": message,
                "finish_reason": finish_reason(candidate.get("finishReason"), has_calls=bool(calls)),
            }
        )
    if not choices:  # the prompt itself was blocked (promptFeedback.blockReason)
        choices.append(
            {"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": "content_filter"}
        )
    reported = usage_from_gemini(payload.get("usageMetadata"))
    usage = reported or Usage()
    result = {
        "id": completion_id(payload.get("responseId")),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model or payload.get("modelVersion") or "",
        "choices": choices,
        "usage": _usage_dict(usage, payload.get("usageMetadata")),
    }
    return result, reported  # None without usageMetadata: the relay counts the answer itself


# --------------------------------------------------------------------------- stream


class GeminiStreamTranslator(ChatChunkWriter):
    """Gemini ``streamGenerateContent?alt=sse`` -> OpenAI chat.completion.chunk SSE.

    Every ``data:`` line is a whole GenerateContentResponse. ``finished`` becomes True once
    a candidate carries a ``finishReason`` (or the prompt was blocked); the usage chunk and
    ``[DONE]`` are sent by ``close()`` because usage can still change until the end. An
    upstream error object ends the stream with an OpenAI-style error (``error`` is set).
    """

    def __init__(self, *, model: str, include_usage: bool, created: int | None = None) -> None:
        super().__init__(model=model, include_usage=include_usage, created=created)
        self._ids: _CallIds | None = None
        self._raw_usage: dict | None = None
        self._seen: dict[int, int] = {}  # candidate index -> tool calls so far
        self._done: set[int] = set()  # candidates whose finish chunk was sent
        self._closed = False

    def _chunk(self, index: int, delta: dict, finish: str | None = None) -> bytes:
        return self.choice_chunk(delta, finish, index)

    def _response(self, payload: dict) -> bytes:
        if not self.id:
            self.id = completion_id(payload.get("responseId"))
            self._ids = _CallIds(payload.get("responseId"))
        assert self._ids is not None
        if isinstance(payload.get("usageMetadata"), dict):
            self._raw_usage = payload["usageMetadata"]
            self.usage = usage_from_gemini(self._raw_usage)
        out: list[bytes] = []
        candidates = payload.get("candidates") or []
        if not candidates and (payload.get("promptFeedback") or {}).get("blockReason"):
            candidates = [{"index": 0, "finishReason": "PROHIBITED_CONTENT"}]
        for position, candidate in enumerate(candidates):
            index = int(candidate.get("index", position))
            if index in self._done:
                continue
            if index not in self._seen:
                self._seen[index] = 0
                out.append(self._chunk(index, {"role": "assistant", "content": ""}))
            for part in (candidate.get("content") or {}).get("parts") or ():
                if "functionCall" in part:
                    call = {"index": self._seen[index], **_tool_call(part, self._ids)}
                    self._seen[index] += 1
                    self.collect(call["function"]["arguments"])
                    out.append(self._chunk(index, {"tool_calls": [call]}))
                elif isinstance(part.get("text"), str) and part["text"]:
                    self.collect(part["text"])
                    key = "reasoning_content" if part.get("thought") else "content"
                    out.append(self._chunk(index, {key: part["text"]}))
            if candidate.get("finishReason"):
                self._done.add(index)
                self.finished = True
                reason = finish_reason(candidate["finishReason"], has_calls=self._seen[index] > 0)
                out.append(self._chunk(index, {}, reason))
        return b"".join(out)

    def _line(self, line: bytes) -> bytes:
        if self._closed or not line.startswith(b"data:"):
            return b""
        try:
            payload = orjson.loads(line[5:].strip())
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(payload, dict):
            return b""
        if isinstance(payload.get("error"), dict):
            error = payload["error"]
            self.error = error
            self.finished = True
            self._closed = True
            return sse(
                {
                    "error": {
                        "message": str(error.get("message") or "upstream error"),
                        "type": str(error.get("status") or "upstream_error"),
                        "param": None,
                        "code": None if error.get("code") is None else str(error["code"]),
                    }
                }
            )
        return self._response(payload)

    def close(self) -> bytes:
        out = super().close()
        if self._closed or not self.finished:
            return out  # cut (or errored) stream: no finish, no usage, no [DONE]
        self._closed = True
        parts = [out]
        for index in sorted(set(self._seen) - self._done):
            reason = finish_reason("STOP", has_calls=self._seen[index] > 0)
            parts.append(self._chunk(index, {}, reason))
        if self.include_usage:
            usage = self.usage or Usage()
            parts.append(self.usage_chunk(_usage_dict(usage, self._raw_usage)))
        parts.append(SSE_DONE)
        return b"".join(parts)


# --------------------------------------------------------------------------- adapter


class GeminiAdapter(Adapter):
    name = "gemini"
    capabilities = frozenset({Capability.CHAT, Capability.PROBE, Capability.MODEL_LIST})
    # n maps to candidateCount, seed and penalties exist; logprobs are not translated back
    chat_limits = {
        "logprobs": lambda value: value is False,
        "top_logprobs": lambda value: value == 0,
        "logit_bias": lambda value: not value,
    }

    def headers(self, target: Target) -> dict[str, str]:
        headers = {"content-type": "application/json", "x-goog-api-key": target.api_key}
        headers.update(target.extra_headers)
        return headers

    def url(self, target: Target, *, stream: bool) -> str:
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{target.base_url}/models/{target.upstream_model}:{method}"

    def build_body(self, body: dict, target: Target) -> dict:
        return merge_params(openai_to_gemini(body), target.extra_params)

    def chat_request(self, body: dict, target: Target, *, stream: bool) -> UpstreamRequest:
        return UpstreamRequest(
            "POST",
            self.url(target, stream=stream),
            self.headers(target),
            orjson.dumps(self.build_body(body, target)),
        )

    def chat_response(self, payload: dict, *, model: str) -> tuple[dict, Usage]:
        return gemini_to_openai(payload, model=model)

    def chat_stream(self, *, model: str, include_usage: bool) -> StreamTranslator:
        return GeminiStreamTranslator(model=model, include_usage=include_usage)

    def models_request(self, target: Target) -> UpstreamRequest:
        headers = self.headers(target)
        headers.pop("content-type", None)
        return UpstreamRequest("GET", f"{target.base_url}/models?pageSize=1000", headers, None)

    def models_response(self, payload: bytes) -> list[UpstreamModel]:
        """Gemini names models ``models/<id>``; requests name them ``<id>``."""
        return listed_models(payload, "models", name_field="displayName", prefix="models/")

    def probe_request(self, target: Target) -> UpstreamRequest:
        """The model list: authenticated, and free."""
        return self.models_request(target)


__all__ = [
    "GeminiAdapter",
    "GeminiStreamTranslator",
    "gemini_schema",
    "gemini_to_openai",
    "openai_to_gemini",
    "usage_from_gemini",
]
