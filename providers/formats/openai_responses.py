"""The inbound OpenAI Responses protocol (``/v1/responses``) on top of any chat upstream.

Responses clients (Codex CLI, the OpenAI SDKs' ``client.responses``) send a Responses
request; :func:`responses_to_chat` turns it into an OpenAI chat request that the normal
relay sends to whatever upstream serves the model, and the chat answer comes back as a
Response object with :func:`chat_to_response` or, for streams, as the typed Responses
events with :class:`ChatStreamToResponses`. Everything here is pure translation.

Translation notes:

* ``instructions`` becomes the first system message; ``developer`` and ``system`` message
  items become system messages where they stand. ``reasoning`` items (and their
  ``encrypted_content``) are dropped: only the provider family that made them can read
  them. Items of built-in tools (``web_search_call``...) and ``item_reference`` are
  dropped too.
* ``function_call`` items become assistant ``tool_calls`` (consecutive calls in one
  assistant message), ``function_call_output`` a ``tool`` message with the same call id
  (images in an output move to a user message right after the tool messages).
* Tools: flat function tools become chat's nested ones; the functions of a ``namespace``
  tool are flattened to ``<namespace>__<name>`` (:func:`flat_name`) and the calls mapped
  back to ``name`` + ``namespace``; ``custom`` tools (free-form input) become functions
  with one string parameter ``input`` and their calls come back as ``custom_tool_call``
  items. Built-in tools (web_search, file_search, code_interpreter, image_generation,
  mcp, computer use, local_shell...) have no chat equivalent: they are dropped and
  listed in :attr:`ChatPlan.dropped_tools` so the endpoint can say so.
* ``reasoning_content``/``reasoning`` in answers becomes a ``reasoning`` item, with its
  text as the summary only when the client asked for one (``reasoning.summary``).
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from providers.base import StreamTranslator, Usage

from .openai_chat import ChatChunkReader, usage_from_openai

ROLES = ("user", "assistant", "system", "developer")
SUMMARIES = ("auto", "concise", "detailed")
FUNCTION_NAME_MAX = 64
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
# request fields the Responses API refuses when the gateway cannot honour them
UNSUPPORTED = {
    "conversation": "Conversations are not supported by this gateway; use previous_response_id "
    "or send the whole conversation in 'input'.",
    "prompt": "Stored prompt templates are not supported by this gateway; send 'instructions' and "
    "'input' instead.",
}


class RequestError(ValueError):
    """A Responses request the translation cannot take (the endpoint answers 400)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(16).hex()}"  # 128 random bits, as uuid4().hex, at a third of its cost


def json_copy(value: Any) -> Any:
    """A deep copy of JSON data (what requests and stored responses hold), several times
    faster than ``copy.deepcopy``."""
    try:
        return orjson.loads(orjson.dumps(value))
    except orjson.JSONEncodeError:  # nested deeper than orjson writes: the request answers 400 later
        return copy.deepcopy(value)


# --------------------------------------------------------------------------- tools


@dataclass(frozen=True, slots=True)
class ToolName:
    """The client's name of a tool behind a chat function name."""

    name: str
    namespace: str | None = None
    custom: bool = False  # a free-form ``custom`` tool: calls carry ``input``, not ``arguments``


def flat_name(namespace: str | None, name: str) -> str:
    """The chat function name of ``name`` in ``namespace`` (``^[A-Za-z0-9_-]{1,64}$``):
    ``ns__name``, or ``ns`` + ``name`` when either side already has the underscore
    (Codex's ``mcp__server__`` + ``tool``); long names are shortened with a hash."""
    if not namespace:
        joined = name
    elif namespace.endswith("_") or name.startswith("_"):
        joined = namespace + name
    else:
        joined = f"{namespace}__{name}"
    clean = _BAD_NAME_CHARS.sub("_", joined) or "tool"
    if len(clean) > FUNCTION_NAME_MAX:
        digest = hashlib.sha256(joined.encode()).hexdigest()[:8]
        clean = f"{clean[: FUNCTION_NAME_MAX - 9]}_{digest}"
    return clean


CUSTOM_PARAMETERS = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "The tool's input, as free-form text."}},
    "required": ["input"],
}


def _function_tool(tool: dict, namespace: str | None, where: str) -> tuple[dict, ToolName]:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise RequestError(f"Missing required parameter: '{where}.name'.", param=f"{where}.name")
    custom = tool.get("type") == "custom"
    function: dict[str, Any] = {"name": flat_name(namespace, name)}
    description = tool.get("description")
    if custom:
        fmt = tool.get("format") if isinstance(tool.get("format"), dict) else {}
        if fmt.get("type") == "grammar" and fmt.get("definition"):
            syntax = fmt.get("syntax") or "grammar"
            extra = f"The input must follow this {syntax} grammar:\n{fmt['definition']}"
            description = f"{description}\n\n{extra}" if description else extra
        function["description"] = description or ""
        function["parameters"] = copy.deepcopy(CUSTOM_PARAMETERS)
    else:
        if description:
            function["description"] = description
        parameters = tool.get("parameters")
        function["parameters"] = (
            parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}}
        )
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
    if not function.get("description"):
        function.pop("description", None)
    return {"type": "function", "function": function}, ToolName(name, namespace, custom)


def translate_tools(tools: Any) -> tuple[list[dict], dict[str, ToolName], list[str]]:
    """Responses tools -> (chat tools, chat name -> client's tool, dropped built-in types)."""
    if tools is None:
        return [], {}, []
    if not isinstance(tools, list):
        raise RequestError("'tools' must be an array.", param="tools")
    out: list[dict] = []
    names: dict[str, ToolName] = {}
    dropped: list[str] = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise RequestError(f"tools[{index}] must be an object.", param=f"tools[{index}]")
        kind = tool.get("type")
        if kind in ("function", "custom"):
            members = [(tool, None, f"tools[{index}]")]
        elif kind == "namespace":
            namespace = tool.get("name")
            if not isinstance(namespace, str) or not namespace:
                raise RequestError(
                    f"Missing required parameter: 'tools[{index}].name'.", param=f"tools[{index}].name"
                )
            children = tool.get("tools") if isinstance(tool.get("tools"), list) else []
            members = [
                (child, namespace, f"tools[{index}].tools[{position}]")
                for position, child in enumerate(children)
                if isinstance(child, dict) and child.get("type", "function") in ("function", "custom")
            ]
        else:
            label = str(kind or "unknown")
            if label not in dropped:
                dropped.append(label)
            continue
        for member, namespace, where in members:
            chat_tool, name = _function_tool(member, namespace, where)
            flat = chat_tool["function"]["name"]
            if flat in names:
                continue  # the same function twice: one declaration
            names[flat] = name
            out.append(chat_tool)
    return out, names, dropped


def _tool_choice(choice: Any, names: dict[str, ToolName]) -> Any:
    """The chat ``tool_choice`` for a Responses one (None: leave it to the upstream)."""
    if isinstance(choice, str):
        return choice if choice in ("auto", "none", "required") else None
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if kind in ("function", "custom") and isinstance(choice.get("name"), str):
        flat = flat_name(choice.get("namespace"), choice["name"])
        if flat not in names:
            flat = next((key for key, value in names.items() if value.name == choice["name"]), None)
        return {"type": "function", "function": {"name": flat}} if flat else None
    if kind == "allowed_tools":
        return "required" if choice.get("mode") == "required" else "auto"
    return None  # a built-in tool, dropped for chat providers


# --------------------------------------------------------------------------- input


def _part_text(part: dict) -> str:
    for key in ("text", "refusal"):
        if isinstance(part.get(key), str):
            return part[key]
    return ""


def _parts(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    if isinstance(content, list):
        return [part for part in content if isinstance(part, dict)]
    return []


def _plain_text(content: Any) -> str:
    return "\n\n".join(text for text in (_part_text(part) for part in _parts(content)) if text)


def _chat_part(part: dict, where: str) -> dict | None:
    """A Responses input content part -> a chat content part (None: nothing to send)."""
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        text = part.get("text")
        return {"type": "text", "text": text} if isinstance(text, str) and text else None
    if kind == "refusal":
        text = part.get("refusal")
        return {"type": "text", "text": text} if isinstance(text, str) and text else None
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise RequestError(
                f"{where}: images by 'file_id' are not supported by this gateway; send 'image_url' "
                "(a URL or a data URL).",
                param=where,
            )
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in ("low", "high"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        data = part.get("file_data")
        if not isinstance(data, str) or not data:
            raise RequestError(
                f"{where}: files by 'file_id' or 'file_url' are not supported by this gateway; send "
                "'file_data' (a data URL).",
                param=where,
            )
        file = {"file_data": data, "filename": part.get("filename") or "file"}
        return {"type": "file", "file": file}
    return None  # audio and other parts: no chat equivalent


def _user_content(content: Any, where: str) -> str | list[dict] | None:
    parts = [
        converted
        for index, part in enumerate(_parts(content))
        if (converted := _chat_part(part, f"{where}.content[{index}]")) is not None
    ]
    if not parts:
        return None
    if all(part["type"] == "text" for part in parts):
        return "\n\n".join(part["text"] for part in parts)
    return parts


def _output_content(output: Any, where: str) -> tuple[str, list[dict]]:
    """A function_call_output's output -> (tool message text, image parts)."""
    if isinstance(output, str):
        return output, []
    if not isinstance(output, list):
        return ("" if output is None else orjson.dumps(output).decode()), []
    texts: list[str] = []
    images: list[dict] = []
    for index, part in enumerate(output):
        if not isinstance(part, dict):
            continue
        converted = _chat_part(part, f"{where}.output[{index}]")
        if converted is None:
            continue
        if converted["type"] == "text":
            texts.append(converted["text"])
        else:
            images.append(converted)
    return "\n\n".join(texts), images


def normalize_input(value: Any) -> list[dict]:
    """The request's ``input`` as a list of items, each with an ``id`` and a ``type`` (what
    ``GET /v1/responses/{id}/input_items`` lists); a string is one user message."""
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    if not isinstance(value, list):
        raise RequestError("'input' must be a string or an array of input items.", param="input")
    items: list[dict] = []
    for index, raw in enumerate(value):
        if not isinstance(raw, dict):
            raise RequestError(f"input[{index}] must be an object.", param=f"input[{index}]")
        item = json_copy(raw)
        kind = item.setdefault("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise RequestError(
                    f"Invalid value for 'input[{index}].role': expected one of {', '.join(ROLES)}.",
                    param=f"input[{index}].role",
                )
            content = item.get("content")
            if not isinstance(content, str | list):
                raise RequestError(
                    f"Missing required parameter: 'input[{index}].content'.", param=f"input[{index}].content"
                )
            if isinstance(content, str):
                part = "output_text" if role == "assistant" else "input_text"
                item["content"] = [{"type": part, "text": content}]
            for position, part in enumerate(item["content"]):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    where = f"input[{index}].content[{position}]"
                    raise RequestError(f"'{where}' must be an object with a 'type'.", param=where)
            for part in item["content"]:
                if isinstance(part, dict) and part.get("type") == "output_text":
                    part.setdefault("annotations", [])
            item.setdefault("id", new_id("msg"))
            item.setdefault("status", "completed")
        elif kind in ("function_call", "custom_tool_call"):
            for name in ("call_id", "name"):
                if not isinstance(item.get(name), str) or not item[name]:
                    raise RequestError(
                        f"Missing required parameter: 'input[{index}].{name}'.",
                        param=f"input[{index}].{name}",
                    )
            item.setdefault("id", new_id("fc" if kind == "function_call" else "ctc"))
            item.setdefault("status", "completed")
        elif kind in ("function_call_output", "custom_tool_call_output"):
            if not isinstance(item.get("call_id"), str) or not item["call_id"]:
                raise RequestError(
                    f"Missing required parameter: 'input[{index}].call_id'.", param=f"input[{index}].call_id"
                )
            item.setdefault("id", new_id("fco" if kind == "function_call_output" else "ctco"))
            item.setdefault("status", "completed")
        items.append(item)
    return items


def items_to_messages(items: list[dict], messages: list[dict] | None = None) -> list[dict]:
    """Responses items -> chat messages, appended to ``messages`` (returned)."""
    messages = [] if messages is None else messages
    images: list[dict] = []  # of tool outputs, for a user message after the tool messages

    def flush_images() -> None:
        if images:
            messages.append({"role": "user", "content": list(images)})
            images.clear()

    for index, item in enumerate(items):
        kind = item.get("type", "message")
        where = f"input[{index}]"
        if kind in ("function_call_output", "custom_tool_call_output"):
            text, more = _output_content(item.get("output"), where)
            messages.append({"role": "tool", "tool_call_id": str(item.get("call_id") or ""), "content": text})
            images.extend(more)
            continue
        if kind == "reasoning" or kind not in ("message", "function_call", "custom_tool_call"):
            continue  # reasoning, built-in tool calls, item references: nothing for chat
        flush_images()
        last = messages[-1] if messages else None
        if kind == "message":
            role = item.get("role")
            if role in ("system", "developer"):
                text = _plain_text(item.get("content"))
                if text:
                    messages.append({"role": "system", "content": text})
            elif role == "assistant":
                text = _plain_text(item.get("content"))
                if not text:
                    continue
                if last is not None and last["role"] == "assistant":
                    last["content"] = f"{last['content']}\n\n{text}" if last.get("content") else text
                else:
                    messages.append({"role": "assistant", "content": text})
            else:
                content = _user_content(item.get("content"), where)
                if content:
                    messages.append({"role": "user", "content": content})
            continue
        if kind == "function_call":
            arguments = item.get("arguments")
            arguments = arguments if isinstance(arguments, str) else orjson.dumps(arguments or {}).decode()
        else:
            arguments = orjson.dumps({"input": str(item.get("input") or "")}).decode()
        call = {
            "id": str(item.get("call_id") or ""),
            "type": "function",
            "function": {
                "name": flat_name(item.get("namespace"), str(item.get("name") or "")),
                "arguments": arguments,
            },
        }
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    flush_images()
    return messages


# --------------------------------------------------------------------------- request


@dataclass(slots=True)
class ChatPlan:
    """A Responses request translated for a chat upstream."""

    chat: dict  # the chat completions request
    input_items: list[dict]  # the request's input items, with ids
    messages: list[dict]  # the conversation so far (history + this input), without instructions
    tools: dict[str, ToolName] = field(default_factory=dict)  # chat function name -> client's tool
    dropped_tools: list[str] = field(default_factory=list)  # built-in tool types not sent


def wants_summary(body: dict) -> bool:
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    return reasoning.get("summary") in SUMMARIES or reasoning.get("generate_summary") in SUMMARIES


def _response_format(text: Any) -> dict | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        schema: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": fmt.get("schema") or {}}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        return {"type": "json_schema", "json_schema": schema}
    return None


def responses_to_chat(body: dict, *, history: list[dict] | None = None, reasoning: bool = False) -> ChatPlan:
    """Responses request -> chat request.

    ``history``: the chat messages of the previous response (``previous_response_id``),
    placed before this input. ``reasoning``: the upstream model reasons, so
    ``reasoning.effort`` is sent as ``reasoning_effort``."""
    for name, why in UNSUPPORTED.items():
        if body.get(name):
            raise RequestError(why, param=name, code="unsupported_parameter")
    if body.get("background"):
        raise RequestError(
            "Background responses are not supported by this gateway; send the request without "
            "'background' (or with stream: true for long answers).",
            param="background",
            code="unsupported_parameter",
        )
    input_items = normalize_input(body.get("input", []))
    conversation = json_copy(history) if history else []
    items_to_messages(input_items, conversation)
    messages: list[dict] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    elif isinstance(instructions, list):
        items_to_messages(normalize_input(instructions), messages)
    messages.extend(json_copy(conversation))
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    tools, names, dropped = translate_tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), names)
        if choice is not None:
            chat["tool_choice"] = choice
        if isinstance(body.get("parallel_tool_calls"), bool):
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            chat[key] = body[key]
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    effort = (body.get("reasoning") or {}).get("effort") if isinstance(body.get("reasoning"), dict) else None
    if reasoning and isinstance(effort, str) and effort != "none":
        chat["reasoning_effort"] = effort
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        chat["user"] = user[:64]
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return ChatPlan(
        chat=chat, input_items=input_items, messages=conversation, tools=names, dropped_tools=dropped
    )


# --------------------------------------------------------------------------- response


ECHOED_DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt_cache_key": None,
    "safety_identifier": None,
    "service_tier": "default",
    "store": True,
    "temperature": 1.0,
    "top_logprobs": 0,
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
}


def response_object(body: dict, *, response_id: str, model: str, created_at: int | None = None) -> dict:
    """The Response object of a request before any output: its id, the model the client
    asked for, and the request's settings echoed as the API does."""
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at if created_at is not None else int(time.time()),
        "status": "in_progress",
        "background": False,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [],
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "text": {
            "format": text.get("format") or {"type": "text"},
            "verbosity": text.get("verbosity") or "medium",
        },
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") if isinstance(body.get("tools"), list) else [],
        "usage": None,
        "metadata": body.get("metadata") if isinstance(body.get("metadata"), dict) else {},
    }
    for key, default in ECHOED_DEFAULTS.items():
        value = body.get(key)
        response[key] = default if value is None else value
    return response


def responses_usage(raw: dict | None, *, input_tokens: int = 0, output_tokens: int = 0) -> dict:
    """The Responses usage object for a chat ``usage`` (or for counted tokens when None)."""
    usage = usage_from_openai(raw)
    reasoning = 0
    if usage is None:
        prompt, completion, cached = input_tokens, output_tokens, 0
    else:
        prompt, completion, cached = usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens
        details = raw.get("completion_tokens_details")
        if isinstance(details, dict):
            reasoning = int(details.get("reasoning_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def _status(finish_reason: Any) -> tuple[str, dict | None]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _call_item(call_id: str, flat: str, arguments: str, tools: dict[str, ToolName], status: str) -> dict:
    """A chat tool call -> a ``function_call`` (or ``custom_tool_call``) output item."""
    tool = tools.get(flat) or ToolName(flat)
    if tool.custom:
        try:
            parsed = orjson.loads(arguments) if arguments.strip() else {}
        except orjson.JSONDecodeError:
            parsed = None
        value = parsed.get("input") if isinstance(parsed, dict) else None
        item = {
            "id": new_id("ctc"),
            "type": "custom_tool_call",
            "status": status,
            "call_id": call_id,
            "name": tool.name,
            "input": value if isinstance(value, str) else arguments,
        }
    else:
        item = {
            "id": new_id("fc"),
            "type": "function_call",
            "status": status,
            "arguments": arguments,
            "call_id": call_id,
            "name": tool.name,
        }
    if tool.namespace:
        item["namespace"] = tool.namespace
    return item


def _reasoning_item(text: str, summary: bool) -> dict:
    return {
        "id": new_id("rs"),
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}] if summary and text else [],
    }


def finish_response(
    response: dict, *, output: list[dict], status: str, incomplete: dict | None, usage: dict | None
) -> dict:
    done = dict(response)
    done.update(status=status, incomplete_details=incomplete, output=output, usage=usage)
    if status == "completed":
        done["completed_at"] = int(time.time())
    return done


def chat_to_response(
    chat: dict, *, response: dict, tools: dict[str, ToolName], summary: bool = False
) -> dict:
    """A chat.completion -> the finished Response (``response`` from :func:`response_object`).
    A missing usage is left ``None`` for the caller to count."""
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    status, incomplete = _status(choice.get("finish_reason"))
    output: list[dict] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        output.append(_reasoning_item(reasoning, summary))
    content = message.get("content")
    text = (
        "".join(_part_text(p) for p in content if isinstance(p, dict))
        if isinstance(content, list)
        else content
    )
    parts = []
    if isinstance(text, str) and text:
        parts.append(_text_part(text))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    calls = [call for call in message.get("tool_calls") or () if isinstance(call, dict)]
    if parts or not calls:
        output.append(
            {
                "id": new_id("msg"),
                "type": "message",
                "status": "incomplete" if status == "incomplete" else "completed",
                "role": "assistant",
                "content": parts or [_text_part("")],
            }
        )
    for call in calls:
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        arguments = function.get("arguments")
        arguments = arguments if isinstance(arguments, str) else orjson.dumps(arguments or {}).decode()
        call_id = str(call.get("id") or new_id("call"))
        output.append(_call_item(call_id, str(function.get("name") or ""), arguments, tools, "completed"))
    usage = responses_usage(chat["usage"]) if isinstance(chat.get("usage"), dict) else None
    return finish_response(response, output=output, status=status, incomplete=incomplete, usage=usage)


def output_text(response: dict) -> str:
    """The generated text of a Response (its messages, tool arguments and inputs)."""
    parts: list[str] = []
    for item in response.get("output") or ():
        if item.get("type") == "message":
            parts.extend(_part_text(part) for part in item.get("content") or () if isinstance(part, dict))
        elif item.get("type") == "function_call":
            parts.append(str(item.get("arguments") or ""))
        elif item.get("type") == "custom_tool_call":
            parts.append(str(item.get("input") or ""))
    return "".join(parts)


def conversation_after(plan_messages: list[dict], response: dict) -> list[dict]:
    """The chat messages a follow-up (``previous_response_id``) continues from: the
    conversation so far and the answer (reasoning is not kept: chat cannot replay it)."""
    return items_to_messages(response.get("output") or [], json_copy(plan_messages))


# --------------------------------------------------------------------------- stream


def sse_event(data: dict) -> bytes:
    return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def failed_response(response: dict, message: str, output: list[dict] | None = None) -> dict:
    failed = dict(response)
    failed.update(
        status="failed",
        error={"code": "server_error", "message": message},
        output=output if output is not None else [],
    )
    return failed


def failed_event(message: str, *, response: dict | None = None, sequence_number: int = 0) -> bytes:
    """``response.failed`` for a stream that broke off (a bare one when the response is
    unknown: the relay's protocol-level fallback)."""
    if response is None:
        response = response_object({}, response_id=new_id("resp"), model="")
    data = {
        "type": "response.failed",
        "sequence_number": sequence_number,
        "response": failed_response(response, message),
    }
    return sse_event(data)


class ChatStreamToResponses(ChatChunkReader):
    """OpenAI chat.completion.chunk SSE -> the Responses API's typed SSE events.

    Only the first choice is translated. Every event has a strictly increasing
    ``sequence_number``; output items are opened as their first content arrives
    (reasoning, the message, one function call per chat tool-call index: fragments of
    several calls may interleave, each lands in its own item by ``output_index``) and all
    are closed when the answer is complete, before exactly one terminal event:
    ``response.completed`` (with usage), ``response.incomplete`` (``finish_reason:
    length`` or ``content_filter``) or ``response.failed`` (an upstream error in the
    stream; a stream cut before its end gets one from :meth:`stream_error`).

    The terminal event waits for the usage chunk or ``[DONE]`` (or a clean end after a
    finish_reason). ``on_done`` is called with the final Response once it is sent.
    """

    def __init__(
        self,
        *,
        response: dict,
        tools: dict[str, ToolName] | None = None,
        summary: bool = False,
        input_tokens: int = 0,
        count_tokens: Callable[[str], int] | None = None,
        on_done: Callable[[dict], None] | None = None,
    ) -> None:
        super().__init__()
        self.response = response
        self.tools = tools or {}
        self.summary = summary
        self.input_tokens = input_tokens
        self.count_tokens = count_tokens
        self.on_done = on_done
        self.final: dict | None = None
        self._seq = 0
        self._started = False
        self._items: list[dict] = []  # output items by output_index
        self._open: set[int] = set()  # output indexes not done yet
        self._reasoning: int | None = None  # output index of the open reasoning item
        self._reasoning_text: list[str] = []
        self._message: int | None = None  # output index of the message item
        self._parts: list[dict] = []  # the message's content parts so far
        self._part_text: list[str] = []  # text of the open part
        self._calls: dict[int, dict] = {}  # chat tool-call index -> state
        self._finish_reason: str | None = None
        self._raw_usage: dict | None = None
        self._shown: list[str] = []
        self._annotations: list[dict] = []  # of the open output_text part

    # -- events
    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return sse_event(data)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._event("response.created", response=self.response) + self._event(
            "response.in_progress", response=self.response
        )

    def _add(self, item: dict) -> tuple[int, bytes]:
        index = len(self._items)
        self._items.append(item)
        self._open.add(index)
        return index, self._event("response.output_item.added", output_index=index, item=item)

    def _done(self, index: int) -> bytes:
        self._open.discard(index)
        return self._event("response.output_item.done", output_index=index, item=self._items[index])

    # -- reasoning
    def _reasoning_delta(self, text: str) -> bytes:
        out = b""
        if self._reasoning is None:
            item = {"id": new_id("rs"), "type": "reasoning", "summary": []}
            self._reasoning, out = self._add(item)
            if self.summary:
                out += self._event(
                    "response.reasoning_summary_part.added",
                    item_id=item["id"],
                    output_index=self._reasoning,
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
        self._reasoning_text.append(text)
        self._shown.append(text)
        if not self.summary:
            return out
        item = self._items[self._reasoning]
        return out + self._event(
            "response.reasoning_summary_text.delta",
            item_id=item["id"],
            output_index=self._reasoning,
            summary_index=0,
            delta=text,
        )

    def _close_reasoning(self) -> bytes:
        if self._reasoning is None:
            return b""
        index = self._reasoning
        item = self._items[index]
        text = "".join(self._reasoning_text)
        self._reasoning, self._reasoning_text = None, []  # more reasoning later: a new item
        out = b""
        if self.summary:
            part = {"type": "summary_text", "text": text}
            out += self._event(
                "response.reasoning_summary_text.done",
                item_id=item["id"],
                output_index=index,
                summary_index=0,
                text=text,
            )
            out += self._event(
                "response.reasoning_summary_part.done",
                item_id=item["id"],
                output_index=index,
                summary_index=0,
                part=part,
            )
            item["summary"] = [part]
        return out + self._done(index)

    # -- the message
    def _open_part(self, kind: str) -> bytes:
        """The message item and its content part of ``kind`` (``output_text`` or
        ``refusal``), opened when they are not yet."""
        out = self._close_reasoning()
        if self._message is None:
            item = {
                "id": new_id("msg"),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            self._message, added = self._add(item)
            out += added
        item = self._items[self._message]
        if not self._parts or self._parts[-1]["type"] != kind:
            out += self._close_part()
            part = _text_part("") if kind == "output_text" else {"type": "refusal", "refusal": ""}
            self._parts.append(part)
            out += self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=self._message,
                content_index=len(self._parts) - 1,
                part=part,
            )
        return out

    def _text_delta(self, kind: str, text: str) -> bytes:
        out = self._open_part(kind)
        item = self._items[self._message]
        self._part_text.append(text)
        self._shown.append(text)
        event = "response.output_text.delta" if kind == "output_text" else "response.refusal.delta"
        extra = {"logprobs": []} if kind == "output_text" else {}
        return out + self._event(
            event,
            item_id=item["id"],
            output_index=self._message,
            content_index=len(self._parts) - 1,
            delta=text,
            **extra,
        )

    def add_items(self, items: list[dict]) -> bytes:
        """Whole output items made by the gateway itself (``web_search_call``): the open
        message is closed first (text after them goes to a new message item)."""
        out = self._start() + self._close_reasoning() + self._close_message()
        for item in items:
            index, added = self._add(item)
            out += added + self._done(index)
        return out

    def cite(self, annotate: Callable[[str], list[dict]]) -> bytes:
        """``response.output_text.annotation.added`` events for the open output_text part
        (``annotate``: its text -> annotations); they are kept in the part when it closes."""
        if self._message is None or not self._parts or self._parts[-1].get("closed"):
            return b""
        if self._parts[-1]["type"] != "output_text":
            return b""
        item = self._items[self._message]
        out = b""
        for annotation in annotate("".join(self._part_text)):
            out += self._event(
                "response.output_text.annotation.added",
                item_id=item["id"],
                output_index=self._message,
                content_index=len(self._parts) - 1,
                annotation_index=len(self._annotations),
                annotation=annotation,
            )
            self._annotations.append(annotation)
        return out

    def _close_part(self) -> bytes:
        if not self._parts or self._parts[-1].get("closed"):
            return b""
        part = self._parts[-1]
        item = self._items[self._message]
        text = "".join(self._part_text)
        self._part_text = []
        index = len(self._parts) - 1
        where = {"item_id": item["id"], "output_index": self._message, "content_index": index}
        if part["type"] == "output_text":
            final = _text_part(text)
            final["annotations"], self._annotations = self._annotations, []
            out = self._event("response.output_text.done", **where, text=text, logprobs=[])
        else:
            final = {"type": "refusal", "refusal": text}
            out = self._event("response.refusal.done", **where, refusal=text)
        self._parts[-1] = {**final, "closed": True}
        return out + self._event("response.content_part.done", **where, part=final)

    def _close_message(self, status: str = "completed") -> bytes:
        if self._message is None:
            return b""
        out = self._close_part()
        index = self._message
        item = self._items[index]
        item["content"] = [{k: v for k, v in part.items() if k != "closed"} for part in self._parts]
        item["status"] = "incomplete" if status == "incomplete" else "completed"
        self._message, self._parts = None, []  # text after a tool call: a new message item
        return out + self._done(index)

    # -- tool calls
    def _tool(self, call: dict) -> bytes:
        index, state, arguments = self._tool_delta(
            call, self._calls, {"id": None, "name": None, "output": None}
        )
        if arguments:
            state["args"].append(arguments)
        if state["output"] is None:
            return self._open_call(state) if state["name"] else b""
        item = self._items[state["output"]]
        if not arguments or item["type"] != "function_call":
            return b""  # a custom tool's input is sent whole when it is complete
        return self._event(
            "response.function_call_arguments.delta",
            item_id=item["id"],
            output_index=state["output"],
            delta=arguments,
        )

    def _open_call(self, state: dict) -> bytes:
        out = self._close_reasoning() + self._close_message()
        call_id = state["id"] or new_id("call")
        state["id"] = call_id
        item = _call_item(call_id, state["name"] or "", "", self.tools, "in_progress")
        state["output"], added = self._add(item)
        out += added
        sent = "".join(state["args"])
        if sent and item["type"] == "function_call":
            out += self._event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=state["output"],
                delta=sent,
            )
        return out

    def _close_call(self, state: dict) -> bytes:
        index = state["output"]
        item = self._items[index]
        arguments = "".join(state["args"])
        if item["type"] == "function_call":
            item["arguments"] = arguments
            out = self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=arguments,
            )
        else:
            final = _call_item(item["call_id"], state["name"] or "", arguments, self.tools, "completed")
            item["input"] = final["input"]
            out = self._event(
                "response.custom_tool_call_input.delta",
                item_id=item["id"],
                output_index=index,
                delta=item["input"],
            )
            out += self._event(
                "response.custom_tool_call_input.done",
                item_id=item["id"],
                output_index=index,
                input=item["input"],
            )
        item["status"] = "completed"
        return out + self._done(index)

    # -- the end
    def _finish(self) -> bytes:
        if self.finished:
            return b""
        out = self._start()
        status, incomplete = _status(self._finish_reason)
        out += self._close_reasoning()
        for state in sorted(
            self._calls.values(), key=lambda s: s["output"] if s["output"] is not None else 1 << 30
        ):
            if state["output"] is None:
                out += self._open_call(state)  # its name never came: sent as it is
        if not self._items:
            out += self._open_part("output_text")  # an empty answer is an empty message
        out += self._close_message(status)
        for state in sorted(self._calls.values(), key=lambda s: s["output"]):
            if state["output"] in self._open:
                out += self._close_call(state)
        if self._raw_usage is not None:
            usage = responses_usage(self._raw_usage)
        else:
            shown = "".join(self._shown) + "".join("".join(s["args"]) for s in self._calls.values())
            counted = self.count_tokens(shown) if self.count_tokens and shown else 0
            usage = responses_usage(None, input_tokens=self.input_tokens, output_tokens=counted)
        self.final = finish_response(
            self.response, output=self._items, status=status, incomplete=incomplete, usage=usage
        )
        self.finished = True
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        out += self._event(kind, response=self.final)
        if self.on_done is not None:
            self.on_done(self.final)
        return out

    def _fail(self, message: str) -> bytes:
        out = self._start()
        self.finished = True
        failed = failed_response(self.response, message, [item for item in self._items])
        return out + self._event("response.failed", response=failed)

    def stream_error(self, message: str) -> bytes:
        if self.finished:
            return b""
        return self._fail(message)

    # -- chunks
    def _chunk(self, chunk: dict) -> bytes:
        if "error" in chunk and not chunk.get("choices"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else error
            self.error = error if isinstance(error, dict) else {"message": str(error)}
            return self._fail(str(message or "upstream error"))
        out = self._start()
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out += self._reasoning_delta(reasoning)
            content = delta.get("content")
            if isinstance(content, str) and content:
                out += self._text_delta("output_text", content)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                out += self._text_delta("refusal", refusal)
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    out += self._tool(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        if isinstance(chunk.get("usage"), dict):
            self._raw_usage = chunk["usage"]
            if self._finish_reason is not None:
                out += self._finish()
        return out


# --------------------------------------------------------------------------- passthrough
# For upstreams that serve the Responses API themselves (``Provider.responses_api``): the
# request goes as the client sent it but for the model name, the answer comes back as it
# is but for the model name, and usage is read on the way.


def usage_from_responses(raw: Any) -> Usage | None:
    """The billing :class:`Usage` of a Responses ``usage`` object (reasoning tokens are part
    of ``output_tokens``, as they are of chat's ``completion_tokens``)."""
    if not isinstance(raw, dict):
        return None
    details = raw.get("input_tokens_details") if isinstance(raw.get("input_tokens_details"), dict) else {}
    return Usage(
        prompt_tokens=int(raw.get("input_tokens") or 0),
        completion_tokens=int(raw.get("output_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )


def passthrough_body(body: dict, *, upstream_model: str, extra_params: dict | None = None) -> dict:
    out = dict(body)
    out["model"] = upstream_model
    if extra_params:
        out.update(extra_params)
    return out


def passthrough_answer(payload: bytes, *, model: str) -> tuple[bytes, dict, Usage | None]:
    """An upstream Response as the client gets it (``model`` the name it asked for), the
    Response itself, and its usage."""
    data = orjson.loads(payload)
    if not isinstance(data, dict):
        raise ValueError("not a Response object")
    if data.get("model", model) != model:
        data["model"] = model
        payload = orjson.dumps(data)
    return payload, data, usage_from_responses(data.get("usage"))


TERMINAL = ("response.completed", "response.incomplete", "response.failed")


class ResponsesPassthroughStream(StreamTranslator):
    """A Responses SSE stream passed through event by event: the ``model`` of the events
    that carry the Response is rewritten to the name the client asked for, usage is read
    from the terminal event, generated text is noted (billed by counting if the stream is
    cut), and ``on_done`` gets the final Response of a completed or incomplete answer."""

    def __init__(self, *, model: str, on_done: Callable[[dict], None] | None = None) -> None:
        super().__init__()
        self.model = model
        self.on_done = on_done

    def _line(self, line: bytes) -> bytes:
        if not line.startswith(b"data:"):
            return line + b"\n"
        try:
            event = orjson.loads(line[5:].strip())
        except orjson.JSONDecodeError:
            return line + b"\n"
        if not isinstance(event, dict):
            return line + b"\n"
        kind = event.get("type")
        delta = event.get("delta")
        if kind in ("response.output_text.delta", "response.function_call_arguments.delta") and isinstance(
            delta, str
        ):
            self.collect(delta)
        if kind == "error":
            self.error = {"message": event.get("message") or "upstream error", "code": event.get("code")}
            self.finished = True
            return line + b"\n"
        response = event.get("response")
        if not isinstance(response, dict):
            return line + b"\n"
        if kind in TERMINAL:
            self.finished = True
            usage = usage_from_responses(response.get("usage"))
            if usage is not None:
                self.usage = usage
            if kind == "response.failed":
                error = response.get("error")
                self.error = error if isinstance(error, dict) else {"message": "upstream response failed"}
        changed = self.model and response.get("model", self.model) != self.model
        if changed:
            response["model"] = self.model
        if kind in TERMINAL[:2] and self.on_done is not None:
            self.on_done(response)
        return b"data: " + orjson.dumps(event) + b"\n" if changed else line + b"\n"
