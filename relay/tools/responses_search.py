"""The Responses API's built-in ``web_search`` tool (and ``web_search_preview``), run by the
gateway on routes that only chat: the model is offered the gateway's search tools, and the
Response gets one ``web_search_call`` output item per search (before the message) and
``url_citation`` annotations on its ``output_text`` for every result URL the text cites.
Native Responses routes get the tool passed through."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import orjson

from providers.formats.openai_responses import ChatStreamToResponses, ToolName, chat_to_response

from .chat_stream import ChatStreamSink
from .web_search import Present, Search, Tools, annotate

TOOL_TYPES = ("web_search", "web_search_preview")


def is_web_search(tool) -> bool:
    """``web_search``, ``web_search_preview`` and their dated versions."""
    kind = tool.get("type") if isinstance(tool, dict) else None
    return isinstance(kind, str) and any(kind == t or kind.startswith(t + "_") for t in TOOL_TYPES)


def wanted(body: dict) -> list[str]:
    """The web search tool types the request names."""
    tools = body.get("tools")
    return [tool["type"] for tool in tools if is_web_search(tool)] if isinstance(tools, list) else []


def annotations(text: str, tools: Tools) -> list[dict]:
    """Responses' flat ``url_citation`` annotations (offsets into ``text``)."""
    return [{"type": "url_citation", **a["url_citation"]} for a in annotate(text, tools.sources)]


def call_items(searches: list[Search]) -> list[dict]:
    return [
        {
            "id": "ws_" + hashlib.sha256(f"{s.call_id}\0{s.query}".encode()).hexdigest()[:32],
            "type": "web_search_call",
            "status": "failed" if s.error else "completed",
            "action": {
                "type": "search",
                "query": s.query,
                "sources": [{"type": "url", "url": r.url} for r in s.results],
            },
        }
        for s in searches
    ]


def present(
    *,
    base: dict,
    tools: dict[str, ToolName],
    summary: bool,
    stored: Callable[[dict], None],
    translator: Callable[[], ChatStreamToResponses],
) -> Present:
    def as_json(data: dict, ran: Tools) -> bytes:
        response = chat_to_response(data, response=base, tools=tools, summary=summary)
        for item in response["output"]:
            for part in item.get("content") or () if item["type"] == "message" else ():
                if part.get("type") == "output_text":
                    part["annotations"] = annotations(part["text"], ran)
        response["output"] = call_items(ran.searches) + response["output"]
        stored(response)
        return orjson.dumps(response)

    def after_tools(sink: ChatStreamSink, searches: list[Search]) -> bytes:
        return sink.translator.add_items(call_items(searches))

    def before_finish(sink: ChatStreamSink, ran: Tools) -> bytes:
        return sink.translator.cite(lambda text: annotations(text, ran))

    return Present(json=as_json, stream=translator, after_tools=after_tools, before_finish=before_finish)
