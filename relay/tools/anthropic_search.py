"""Web search on /v1/messages, in Anthropic's shapes.

Two triggers: ``"web_search": true`` (the gateway's tools, answered as a plain message) and
Anthropic's server tool ``{"type": "web_search_20250305", "name": "web_search", ...}``
(and its later versions, e.g. ``web_search_20260209``) when no Anthropic-type provider
serves the model. For the server tool the model is offered one function, ``web_search``;
each of its calls becomes a ``server_tool_use`` block and a ``web_search_tool_result``
block (results, or ``web_search_tool_result_error`` with Anthropic's error code), the text
that cites a result URL gets ``citations`` (``web_search_result_location``), and
``usage.server_tool_use.web_search_requests`` counts the searches made. ``max_uses``,
``allowed_domains`` and ``blocked_domains`` are honoured.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable

import orjson

from providers.formats.anthropic_messages import ChatStreamToMessages, chat_to_messages, sse_event
from providers.search.base import cap

from ..errors import RelayError
from .chat_stream import ChatStreamSink
from .web_search import Present, Search, ServerTool, Tools, annotate

SERVER_TOOL_TYPE = re.compile(r"web_search_\d{8}")
PING = sse_event("ping", {"type": "ping"})
CITED_TEXT_MAX = 150


def is_server_tool(tool) -> bool:
    return (
        isinstance(tool, dict)
        and isinstance(tool.get("type"), str)
        and SERVER_TOOL_TYPE.fullmatch(tool["type"]) is not None
    )


def _domains(tool: dict, name: str) -> tuple[str, ...]:
    value = tool.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(d, str) and d for d in value):
        raise RelayError(400, f"tools.{name}: an array of domain names", param=f"tools.{name}")
    return tuple(d.lower().strip().removeprefix("www.") for d in value)


def server_tool(body: dict) -> ServerTool | None:
    """The options of the request's web search server tool, or None when it has none."""
    tools = body.get("tools")
    found = [tool for tool in tools if is_server_tool(tool)] if isinstance(tools, list) else []
    if not found:
        return None
    tool = found[0]
    max_uses = tool.get("max_uses")
    if max_uses is not None and (isinstance(max_uses, bool) or not isinstance(max_uses, int) or max_uses < 1):
        raise RelayError(400, "tools.max_uses: an integer of at least 1", param="tools.max_uses")
    allowed, blocked = _domains(tool, "allowed_domains"), _domains(tool, "blocked_domains")
    if allowed and blocked:
        raise RelayError(
            400, "tools: allowed_domains and blocked_domains cannot be used together", param="tools"
        )
    return ServerTool(max_uses=max_uses, allowed_domains=allowed, blocked_domains=blocked)


def _opaque(value: str) -> str:
    """The 'encrypted' fields: opaque to clients, which only send them back."""
    return base64.urlsafe_b64encode(value.encode()).decode()


def _use_id(search: Search) -> str:
    return "srvtoolu_" + hashlib.sha256(search.call_id.encode() + search.query.encode()).hexdigest()[:24]


def search_blocks(searches: list[Search]) -> list[dict]:
    blocks = []
    for search in searches:
        use_id = _use_id(search)
        if search.error:
            content: list | dict = {"type": "web_search_tool_result_error", "error_code": search.error}
        else:
            content = [
                {
                    "type": "web_search_result",
                    "url": result.url,
                    "title": result.title,
                    "encrypted_content": _opaque(result.snippet),
                    "page_age": None,
                }
                for result in search.results
            ]
        blocks.append(
            {"type": "server_tool_use", "id": use_id, "name": "web_search", "input": {"query": search.query}}
        )
        blocks.append({"type": "web_search_tool_result", "tool_use_id": use_id, "content": content})
    return blocks


def citations(text: str, tools: Tools) -> list[dict]:
    """One ``web_search_result_location`` per search result URL the text cites."""
    results = {r.url: r for search in tools.searches for r in search.results}
    out, seen = [], set()
    for annotation in annotate(text, tools.sources):
        url = annotation["url_citation"]["url"]
        if url in seen or url not in results:
            continue
        seen.add(url)
        result = results[url]
        out.append(
            {
                "type": "web_search_result_location",
                "url": url,
                "title": result.title,
                "encrypted_index": _opaque(url),
                "cited_text": cap(result.snippet or result.title, CITED_TEXT_MAX),
            }
        )
    return out


def server_usage(tools: Tools) -> dict:
    return {"server_tool_use": {"web_search_requests": tools.performed, "web_fetch_requests": 0}}


def present(
    *,
    model: str,
    thinking: bool,
    stop_sequences: tuple[str, ...],
    server: bool,
    translator: Callable[[], ChatStreamToMessages],
) -> Present:
    """The loop's answer as an Anthropic message (JSON or events)."""

    def as_json(data: dict, tools: Tools) -> bytes:
        message = chat_to_messages(data, model=model, thinking=thinking, stop_sequences=stop_sequences)
        if server:
            for block in message["content"]:
                if block["type"] == "text":
                    cited = citations(block["text"], tools)
                    if cited:
                        block["citations"] = cited
            message["content"] = search_blocks(tools.searches) + message["content"]
            message["usage"].update(server_usage(tools))
        return orjson.dumps(message)

    def after_tools(sink: ChatStreamSink, searches: list[Search]) -> bytes:
        return sink.translator.add_blocks(search_blocks(searches))

    def before_finish(sink: ChatStreamSink, tools: Tools) -> bytes:
        sink.translator.usage_extra = server_usage(tools)
        return sink.translator.cite(citations(sink.round_text, tools))

    return Present(
        json=as_json,
        stream=translator,
        keepalive=PING,
        after_tools=after_tools if server else None,
        before_finish=before_finish if server else None,
    )
