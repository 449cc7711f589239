"""Web search run by the gateway for ``"web_search": true`` on /v1/chat/completions.

The gateway offers the model three function tools next to the client's own: ``search``,
``news`` and ``crawler``. While the model calls only those, the gateway runs them (the
calls of one round concurrently), appends the results as tool messages and calls the model
again, at most ``WEB_SEARCH_MAX_ROUNDS`` times; then one last call without them asks for
an answer. A call of a client tool ends the loop: the answer goes back to the client with
the gateway's own calls removed. Every round is an ordinary forward (failover and all);
their usages add up into the request's one usage record, and the final answer's ``usage``
is that sum. The answer gets ``url_citation`` annotations for the result URLs it cites.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson
from django.conf import settings

from billing.pricing import PPM, token_cost
from core import outbound
from providers.base import StreamTranslator, Usage
from providers.search import SearchBackend, SearchError, SearchResult, configured_backend
from providers.search.base import cap

from ..config import CONFIG, Route
from ..errors import RelayError
from ..forward import Call, Forwarder, UsageRecord
from ..http import Context
from ..tokens import count_chat_prompt, count_text
from .chat_stream import KEEP_ALIVE, ChatStreamSink

SEARCH_PRICE_MODEL = "web_search"  # its per_request price is the price of one search
SPENT = "no more searches: what this request may spend is used up; answer with what you have"

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web. Returns results with title, url and snippet. "
            "Cite the url of each result you use.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "The search query."}},
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "news",
            "description": "Search recent news. Returns results with title, url and snippet.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "The news query."}},
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "crawler",
            "description": "Fetch a web page and return its text.",
            "parameters": {
                "type": "object",
                "properties": {"url": {"type": "string", "description": "The http(s) URL to read."}},
                "required": ["url"],
            },
        },
    },
]


# Anthropic's server tool (web_search_20250305 and later), run by the gateway: the model is
# offered this one function instead of the three above
SERVER_TOOL = {
    "type": "function",
    "function": {
        "name": "web_search",
        "description": "Search the web for current information. Returns results with title, url "
        "and snippet. Cite the url of each result you use.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "The search query."}},
            "required": ["query"],
        },
    },
}


@dataclass(frozen=True, slots=True)
class ServerTool:
    """The options of the client's server tool the gateway honours."""

    max_uses: int | None = None
    allowed_domains: tuple[str, ...] = ()
    blocked_domains: tuple[str, ...] = ()

    def admits(self, url: str) -> bool:
        host = (urlsplit(url).hostname or "").lower()

        def under(domains: tuple[str, ...]) -> bool:
            return any(host == d or host.endswith("." + d) for d in domains)

        if self.allowed_domains and not under(self.allowed_domains):
            return False
        return not under(self.blocked_domains)


@dataclass(slots=True)
class Search:
    """One search the model asked for: the results it got, or an error code."""

    call_id: str
    query: str
    results: list[SearchResult] = field(default_factory=list)
    error: str = ""  # Anthropic's web_search_tool_result_error codes
    done: bool = False  # the backend answered (a search cut short by the client is not billed)


@dataclass(slots=True)
class Present:
    """How the loop's chat-shaped answer reaches a client of another protocol."""

    json: Callable[[dict, Tools], bytes]  # the final chat answer -> the client's body
    stream: Callable[[], StreamTranslator] | None = None  # chat SSE -> the client's SSE
    keepalive: bytes = KEEP_ALIVE
    # streams: the client's bytes after a round's searches, and before the final chunk
    after_tools: Callable[[ChatStreamSink, list[Search]], bytes] | None = None
    before_finish: Callable[[ChatStreamSink, Tools], bytes] | None = None


def web_search_flag(body: dict) -> bool | None:
    """The non-standard ``web_search`` field: read and removed, never forwarded upstream;
    None when the request does not say (the operator's defaults decide: ``by_default``)."""
    value = body.pop("web_search", None)
    if value is None or isinstance(value, bool):
        return value
    raise RelayError(400, "'web_search' must be a boolean.", param="web_search")


def by_default(key, model) -> bool:
    """The operator's default for a request that does not say ``web_search``: on for the key
    or for the model, and only where a backend is configured (a default never turns into a
    400 the client did not ask for)."""
    return bool((key is not None and key.web_search) or model.web_search) and configured_backend() is not None


def backend_or_refuse() -> SearchBackend:
    backend = configured_backend()
    if backend is None:
        raise RelayError(
            400, "Web search is not configured on this gateway.", param="web_search", code="web_search_off"
        )
    return backend


def _tool_name(tool) -> str | None:
    if isinstance(tool, dict):
        function = tool.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return function["name"]
    return None


# --- page text -----------------------------------------------------------------------


def html_to_text(html: str) -> tuple[str, str]:
    """(title, main text) of an HTML page by trafilatura: navigation, boilerplate, scripts
    and markup dropped; its baseline extractor when the main-content one finds nothing."""
    import trafilatura  # half a second of imports (lxml...): paid on the first crawl only

    doc = trafilatura.bare_extraction(html, with_metadata=True, favor_recall=True, include_comments=False)
    title = (getattr(doc, "title", None) or "") if doc is not None else ""
    text = (getattr(doc, "text", None) or "") if doc is not None else ""
    return " ".join(title.split()), text or trafilatura.html2txt(html)


# --- running the tools -------------------------------------------------------------------


class Tools:
    """The gateway's tools for one request, and the sources they produced (url -> title)."""

    def __init__(self, backend: SearchBackend, server: ServerTool | None = None) -> None:
        self.backend = backend
        self.server = server
        self.sources: dict[str, str] = {}
        self.searches: list[Search] = []  # in the order the model asked for them
        self.affordable: int | None = None  # searches the request's reservation still pays for

    def _afford(self) -> bool:
        """Take one search from what the reservation still pays for (None: no limit)."""
        if self.affordable is None:
            return True
        if self.affordable <= 0:
            return False
        self.affordable -= 1
        return True

    @property
    def performed(self) -> int:
        """Searches the backend answered (what is billed)."""
        return sum(1 for search in self.searches if search.done and not search.error)

    async def run(self, name: str, arguments: str, call_id: str = "") -> str:
        try:
            args = orjson.loads(arguments or "{}")
            if not isinstance(args, dict):
                raise ValueError
        except (orjson.JSONDecodeError, ValueError):
            return self._error("the arguments are not a JSON object")
        if name == "web_search" and self.server is not None:
            return await self._server_search(call_id, args.get("query"))
        try:
            if name in ("search", "news"):
                query = args.get("query")
                if not isinstance(query, str) or not query.strip():
                    return self._error("'query' must be a non-empty string")
                find = self.backend.search if name == "search" else self.backend.news
                search = Search(call_id, query)
                self.searches.append(search)
                if not self._afford():
                    search.error = "max_uses_exceeded"
                    return self._error(SPENT)
                results = search.results = await find(query)
                search.done = True
                for result in results:
                    self.sources.setdefault(result.url, result.title)
                return orjson.dumps({"results": [r.as_dict() for r in results]}).decode()
            return await self._crawl(args.get("url"))
        except SearchError as exc:
            if name in ("search", "news"):
                self.searches[-1].error = "unavailable"
            return self._error(str(exc))

    async def _server_search(self, call_id: str, query) -> str:
        search = Search(call_id, query if isinstance(query, str) else "")
        self.searches.append(search)
        server = self.server
        if not search.query.strip():
            search.error = "invalid_tool_input"
        elif server.max_uses is not None and self._sent() > server.max_uses:
            search.error = "max_uses_exceeded"
        elif not self._afford():
            search.error = "max_uses_exceeded"
            return self._error(f"{search.error}: {SPENT}")
        else:
            try:
                found = await self.backend.search(search.query)
            except SearchError as exc:
                search.error = "unavailable"
                return self._error(f"{search.error}: {exc}")
            search.done = True
            search.results = [r for r in found if server.admits(r.url)]
            for result in search.results:
                self.sources.setdefault(result.url, result.title)
            return orjson.dumps({"results": [r.as_dict() for r in search.results]}).decode()
        return self._error(search.error)

    def _sent(self) -> int:
        """Searches sent to the backend so far (this one included)."""
        unsent = ("max_uses_exceeded", "invalid_tool_input")
        return sum(1 for search in self.searches if search.error not in unsent)

    async def _crawl(self, url) -> str:
        if not settings.WEB_SEARCH_CRAWL:
            return self._error("page fetching is disabled on this gateway")
        if not isinstance(url, str) or not url:
            return self._error("'url' must be a non-empty string")
        try:
            page = await outbound.fetch(url, timeout=settings.WEB_SEARCH_TIMEOUT)
        except outbound.OutboundRefused as exc:
            return self._error(f"the page was not fetched: {exc}")
        except (TimeoutError, outbound.OutboundFailed, ValueError) as exc:
            return self._error(f"the page could not be fetched ({outbound.failure_kind(exc)})")
        if page.status >= 400:
            return self._error(f"the page answered {page.status}")
        kind = page.content_type.split(";", 1)[0].strip().lower()
        text = page.body.decode("utf-8", errors="replace")
        title = ""
        if kind in ("text/html", "application/xhtml+xml", ""):
            try:  # lxml work off the event loop, capped in time like the fetch
                title, text = await asyncio.wait_for(
                    asyncio.to_thread(html_to_text, text), settings.WEB_SEARCH_TIMEOUT
                )
            except TimeoutError:
                return self._error("the page took too long to read")
        elif not kind.startswith("text/") and kind not in ("application/json", "application/xml"):
            return self._error(f"the page is not text ({kind})")
        self.sources.setdefault(page.url, title or page.url)
        if url != page.url:
            self.sources.setdefault(url, title or url)
        content = cap(text, settings.WEB_SEARCH_MAX_CHARS)
        return orjson.dumps({"url": page.url, "title": title, "content": content}).decode()

    @staticmethod
    def _error(message: str) -> str:
        return orjson.dumps({"error": message}).decode()


def annotate(content: str, sources: dict[str, str]) -> list[dict]:
    """url_citation annotations for each place the answer cites a source URL (longest
    URLs first, so a URL that is a prefix of another is not also matched inside it)."""
    taken: list[tuple[int, int]] = []
    annotations = []
    for url in sorted(sources, key=len, reverse=True):
        start = content.find(url)
        while start != -1:
            end = start + len(url)
            if not any(s < end and start < e for s, e in taken):
                taken.append((start, end))
                annotations.append(
                    {
                        "type": "url_citation",
                        "url_citation": {
                            "url": url,
                            "title": sources[url],
                            "start_index": start,
                            "end_index": end,
                        },
                    }
                )
            start = content.find(url, end)
    return sorted(annotations, key=lambda a: a["url_citation"]["start_index"])


# --- the loop -----------------------------------------------------------------------------


def _merge(record: UsageRecord, round_record: UsageRecord, total: Usage) -> None:
    record.providers_tried.extend(round_record.providers_tried)
    if round_record.provider_id is not None:  # a provider answered this round
        record.provider_id = round_record.provider_id
        record.model_upstream = round_record.model_upstream
        record.model_billed = round_record.model_billed
        record.price = round_record.price
        record.ttft_ms = round_record.ttft_ms
    record.usage_estimated = record.usage_estimated or round_record.usage_estimated
    usage = round_record.usage
    if usage is not None:
        total.prompt_tokens += usage.prompt_tokens
        total.completion_tokens += usage.completion_tokens
        total.cached_tokens += usage.cached_tokens
    record.usage = Usage(total.prompt_tokens, total.completion_tokens, total.cached_tokens)


def _round_body(body: dict, messages: list, tools: list) -> dict:
    out = {**body, "messages": messages}
    if tools:
        out["tools"] = tools
    else:  # nothing to call: no tool fields at all
        for name in ("tools", "tool_choice", "parallel_tool_calls"):
            out.pop(name, None)
    return out


async def run(
    forwarder: Forwarder,
    ctx: Context,
    routes: list[Route],
    record: UsageRecord,
    *,
    body: dict,
    make_call: Callable[[dict], Call],
    backend: SearchBackend,
    stream: bool = False,
    include_usage: bool = False,
    present: Present | None = None,
    server: ServerTool | None = None,
) -> None:
    """The loop over chat-shaped rounds; ``present`` turns its answer into another
    protocol's (the client's), ``server`` runs Anthropic's server tool instead of ours."""
    client_tools = list(body.get("tools") or [])
    client_names = {_tool_name(tool) for tool in client_tools}
    offered = [SERVER_TOOL] if server is not None else TOOLS
    ours = [tool for tool in offered if tool["function"]["name"] not in client_names]
    our_names = {tool["function"]["name"] for tool in ours}
    tools = Tools(backend, server)
    messages = list(body["messages"])
    total = Usage()
    answered: list[dict] = []  # each answered round's tokens and cost
    search_price = await CONFIG.price_for(SEARCH_PRICE_MODEL)
    rounds = settings.WEB_SEARCH_MAX_ROUNDS
    sink = None
    if stream:
        sink = ChatStreamSink(
            ctx,
            keepalive=settings.WEB_SEARCH_KEEPALIVE,
            translator=present.stream() if present is not None and present.stream else None,
            ping=present.keepalive if present is not None else KEEP_ALIVE,
        )
    budget = _Budget(ctx, record, answered, tools, search_price)
    try:
        for number in range(rounds + 1):
            # the last round: the most rounds, or the reservation pays for no more with tools
            last = number == rounds or (number > 0 and not budget.pays_for(messages, client_tools + ours))
            round_body = _round_body(body, messages, client_tools if last else client_tools + ours)
            call = make_call(round_body)
            round_record = UsageRecord(
                request_type=record.request_type, endpoint=record.endpoint, price=record.price
            )
            if sink is not None:
                sink.new_round()
            try:
                payload = await forwarder.forward(sink or ctx, call, routes, round_record, respond=False)
            except BaseException as exc:
                # the rounds before this one were answered and the provider bills them, and
                # so is what a cut or abandoned stream produced: so do we
                _merge(record, round_record, total)
                if round_record.usage is not None:  # a stream cut or abandoned: billed
                    answered.append(_round_cost(ctx, round_record))
                if sink is not None and isinstance(exc, RelayError):
                    await sink.fail(exc.message)
                raise
            _merge(record, round_record, total)
            answered.append(_round_cost(ctx, round_record))
            if sink is not None:
                if sink.failed or round_record.status_code >= 400:  # told the client in-stream
                    record.status_code = max(round_record.status_code, 502)
                    record.error = round_record.error or "The upstream reported an error in its stream."
                    record.charge_on_failure = True  # this round's tokens, at least
                    await sink.close()
                    return
                text = sink.round_text or None
                calls = [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": c["arguments"]},
                    }
                    for _, c in sorted(sink.calls.items())
                ]
            else:
                data = orjson.loads(payload)
                choices = data.get("choices") or [{}]
                message = choices[0].get("message") or {}
                text = message.get("content")
                calls = [c for c in message.get("tool_calls") or () if isinstance(c, dict)]
            mine = [c for c in calls if (c.get("function") or {}).get("name") in our_names]
            if last or not mine or len(mine) < len(calls):
                if sink is None:
                    await _answer(ctx, call, data, calls, mine, tools, total, present)
                else:
                    kept = [{"id": c["id"], **c["function"]} for c in calls if c not in mine]
                    wanted = include_usage or sink.translator is not None
                    usage = _usage_dict(total, {}) if wanted else None
                    prefix = b""
                    if present is not None and present.before_finish is not None:
                        prefix = present.before_finish(sink, tools)
                    await sink.finish(kept, annotate(sink.text, tools.sources), usage, prefix=prefix)
                return
            messages.append({"role": "assistant", "content": text, "tool_calls": mine})
            tools.affordable = budget.searches_left(messages, client_tools)
            before = len(tools.searches)
            outputs = await asyncio.gather(
                *(
                    tools.run(c["function"]["name"], c["function"].get("arguments") or "", c.get("id") or "")
                    for c in mine
                )
            )
            if sink is not None and present is not None and present.after_tools is not None:
                await sink.raw(present.after_tools(sink, tools.searches[before:]))
            messages.extend(
                {"role": "tool", "tool_call_id": c.get("id"), "content": output}
                for c, output in zip(mine, outputs, strict=True)
            )
    except BaseException:
        # a failure, or the client leaving, after rounds the provider answered (and bills)
        record.charge_on_failure = bool(total.prompt_tokens or total.completion_tokens)
        raise
    finally:
        if sink is not None:
            sink.stop()
        _bill(ctx, record, answered, tools, search_price)


class _Budget:
    """What the pipeline reserved for the loop, against what it spent so far: a round or a
    search the rest does not pay for is not started (the loop answers with what it has)."""

    def __init__(self, ctx: Context, record: UsageRecord, answered: list[dict], tools: Tools, price) -> None:
        self.allowance = record.allowance
        self.price = record.price
        self.multiplier = ctx.key.multiplier if ctx.key is not None else PPM
        self.answered = answered
        self.tools = tools
        one = token_cost(price, prompt_tokens=0, completion_tokens=0, multiplier=self.multiplier)
        self.search = one if price else 0

    def _spent(self) -> int:
        return sum(r["cost"] for r in self.answered) + self.tools.performed * self.search

    def _next_round(self, messages: list, tools: list) -> int:
        """The most the next round can cost: its prompt counted (an upper bound beyond the
        tokenizer's exact range) and the completion limit it is sent."""
        prompt = count_chat_prompt({"messages": messages}) + count_text(orjson.dumps(tools).decode())
        return token_cost(
            self.price, prompt_tokens=prompt, completion_tokens=self.allowance[1], multiplier=self.multiplier
        )

    def pays_for(self, messages: list, tools: list) -> bool:
        if self.allowance is None:
            return True
        return self._spent() + self._next_round(messages, tools) <= self.allowance[0]

    def searches_left(self, messages: list, tools: list) -> int | None:
        """Searches the rest pays for, keeping the cost of the answering round in hand."""
        if self.allowance is None or not self.search:
            return None
        room = self.allowance[0] - self._spent() - self._next_round(messages, tools)
        return max(room // self.search, 0)


def _round_cost(ctx: Context, round_record: UsageRecord) -> dict:
    usage = round_record.usage or Usage()
    cost = token_cost(
        round_record.price,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        multiplier=ctx.key.multiplier if ctx.key is not None else PPM,
    )
    return {
        "model": round_record.model_billed,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "cost": cost,
    }


def _bill(ctx: Context, record: UsageRecord, answered: list[dict], tools: Tools, price) -> None:
    """The request's one usage record: its rounds, and its searches at the per-request
    price of the ``web_search`` model (with the key's multiplier)."""
    multiplier = ctx.key.multiplier if ctx.key is not None else PPM
    searches = tools.performed
    record.rounds = max(len(answered), 1)
    record.extra_cost = (
        token_cost(price, prompt_tokens=0, completion_tokens=0, requests=searches, multiplier=multiplier)
        if searches
        else 0
    )
    record.breakdown = {
        "rounds": answered,
        "searches": [{"query": s.query, "results": len(s.results), "error": s.error} for s in tools.searches],
        "searches_billed": searches,
        "search_price": price.per_request if price is not None else 0,
        "search_cost": record.extra_cost,
    }


def attach(
    call: Call, body: dict, make_call: Callable[[dict], Call], backend: SearchBackend, stream: bool, **options
) -> None:
    """Make ``call`` a request the loop answers (``options``: see :func:`run`); its
    reservation covers every round the loop may take."""
    call.run = functools.partial(
        run, body=body, make_call=make_call, backend=backend, stream=stream, **options
    )
    call.rounds = settings.WEB_SEARCH_MAX_ROUNDS + 1


def _function_call(call: dict) -> dict:
    function = {"name": call["name"], "arguments": call["arguments"]}
    return {"id": call["id"], "type": "function", "function": function}


def _usage_dict(total: Usage, usage: dict) -> dict:
    """The client's usage object: the sum of all rounds (over the final round's own)."""
    usage.update(
        prompt_tokens=total.prompt_tokens,
        completion_tokens=total.completion_tokens,
        total_tokens=total.total_tokens,
    )
    if total.cached_tokens or isinstance(usage.get("prompt_tokens_details"), dict):
        usage["prompt_tokens_details"] = {
            **(usage.get("prompt_tokens_details") or {}),
            "cached_tokens": total.cached_tokens,
        }
    return usage


async def _answer(ctx, call, data, calls, mine, tools: Tools, total: Usage, present) -> None:
    """The final answer to the client: the gateway's own tool calls removed, citations
    added, usage = the sum of all rounds."""
    for choice in data.get("choices") or ():
        message = choice.get("message") or {}
        if mine:
            kept = [c for c in calls if c not in mine]
            if kept:
                message["tool_calls"] = kept
            else:
                message.pop("tool_calls", None)
                if choice.get("finish_reason") == "tool_calls":
                    choice["finish_reason"] = "stop"
        content = message.get("content")
        if isinstance(content, str) and tools.sources:
            annotations = annotate(content, tools.sources)
            if annotations:
                message["annotations"] = [*(message.get("annotations") or []), *annotations]
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    data["usage"] = _usage_dict(total, usage)
    body = orjson.dumps(data) if present is None else present.json(data, tools)
    await ctx.respond(200, body, headers=call.headers)
