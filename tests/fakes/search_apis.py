"""Fakes of the hosted web-search APIs the gateway can use, one loopback server per API,
each answering in that API's real JSON shape (as documented by the vendor):

* ``brave``: ``GET /res/v1/web/search`` -> ``{"type": "search", "web": {"type": "search",
  "results": [{"title", "url", "description", "age"}]}}``; ``GET /res/v1/news/search`` ->
  ``{"type": "news", "results": [...]}``; key in ``X-Subscription-Token``.
* ``tavily``: ``POST /search`` ``{"query", "topic", "max_results"}`` -> ``{"query",
  "results": [{"title", "url", "content", "score", "raw_content"}], "response_time"}``;
  key as ``Authorization: Bearer``.
* ``serper``: ``POST /search`` | ``/news`` ``{"q", "num"}`` -> ``{"searchParameters",
  "organic": [{"title", "link", "snippet", "position"}]}`` | ``{"news": [{"title", "link",
  "snippet", "date", "source"}]}``; key in ``X-API-KEY``.
* ``google``: ``GET /customsearch/v1?key&cx&q&num`` -> ``{"kind": "customsearch#search",
  "items": [{"kind", "title", "link", "displayLink", "snippet"}]}`` (no ``items`` when
  nothing matched); key and engine id in the query.
* ``exa``: ``POST /search`` ``{"query", "numResults", "type", "contents", "category"?}`` ->
  ``{"requestId", "resolvedSearchType", "results": [{"id", "title", "url",
  "publishedDate", "author", "text"}]}``; key in ``x-api-key``.

A wrong key gets the API's 401. ``script({"fail": status})`` fails the next call. Every
request is recorded (method, path, query, headers, json). Result URLs are
``https://example.org/<slug>`` (never fetched by the tests).
"""

from __future__ import annotations

import json

from aiohttp import web

from tests.fakes.searxng import FakeSearxng

KEY = "search-key-test"
ITEMS = [
    ("Python (programming language)", "https://example.org/python", "Python is a programming language."),
    ("Django", "https://example.org/django", "Django is a Python web framework."),
    ("PyPI", "https://example.org/pypi", "The Python Package Index."),
]
NEWS = [("Python 3.14 released", "https://example.org/news", "Python 3.14 is out.")]


class FakeSearchApi(FakeSearxng):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    # --- per API ------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        headers, query = request.headers, request.query
        return {
            "brave": headers.get("X-Subscription-Token") == KEY,
            "tavily": headers.get("Authorization") == f"Bearer {KEY}",
            "serper": headers.get("X-API-KEY") == KEY,
            "google": query.get("key") == KEY,
            "exa": headers.get("x-api-key") == KEY,
        }[self.kind]

    async def brave(self, request: web.Request) -> web.Response:
        news = request.path.endswith("/news/search")
        items = [
            {"type": "search_result", "title": t, "url": u, "description": d, "age": "1 day ago"}
            for t, u, d in (NEWS if news else ITEMS)
        ][: int(request.query.get("count", "20"))]
        if news:
            return web.json_response(
                {"type": "news", "query": {"original": request.query["q"]}, "results": items}
            )
        return web.json_response(
            {
                "type": "search",
                "query": {"original": request.query["q"]},
                "web": {"type": "search", "results": items},
            }
        )

    async def tavily(self, request: web.Request) -> web.Response:
        body = await request.json()
        rows = NEWS if body.get("topic") == "news" else ITEMS
        results = [
            {"title": t, "url": u, "content": d, "score": 0.9, "raw_content": None}
            for t, u, d in rows[: body.get("max_results", 5)]
        ]
        return web.json_response(
            {"query": body["query"], "answer": None, "images": [], "results": results, "response_time": 0.5}
        )

    async def serper(self, request: web.Request) -> web.Response:
        body = await request.json()
        if request.path == "/news":
            news = [
                {"title": t, "link": u, "snippet": d, "date": "2 hours ago", "source": "Example"}
                for t, u, d in NEWS
            ]
            return web.json_response({"searchParameters": {"q": body["q"], "type": "news"}, "news": news})
        organic = [
            {"title": t, "link": u, "snippet": d, "position": i + 1}
            for i, (t, u, d) in enumerate(ITEMS[: body.get("num", 10)])
        ]
        return web.json_response({"searchParameters": {"q": body["q"], "type": "search"}, "organic": organic})

    async def google(self, request: web.Request) -> web.Response:
        if request.query.get("q") == "nothing":
            return web.json_response(
                {"kind": "customsearch#search", "searchInformation": {"totalResults": "0"}}
            )
        items = [
            {"kind": "customsearch#result", "title": t, "link": u, "displayLink": "example.org", "snippet": d}
            for t, u, d in ITEMS[: int(request.query.get("num", "10"))]
        ]
        return web.json_response({"kind": "customsearch#search", "items": items})

    async def exa(self, request: web.Request) -> web.Response:
        body = await request.json()
        rows = NEWS if body.get("category") == "news" else ITEMS
        results = [
            {
                "id": u,
                "title": t,
                "url": u,
                "publishedDate": "2026-11-01T00:00:00.000Z",
                "author": None,
                "text": f"{d}\n\nMore text of the page about {t}.",
            }
            for t, u, d in rows[: body.get("numResults", 10)]
        ]
        return web.json_response({"requestId": "req-1", "resolvedSearchType": "neural", "results": results})

    # --- plumbing -----------------------------------------------------------------------

    @web.middleware
    async def record(self, request: web.Request, handler):
        raw = await request.read()
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "json": json.loads(raw) if raw else None,
            }
        )
        behaviour = self.behaviours.popleft() if self.behaviours else {}
        if behaviour.get("fail"):
            return web.json_response({"error": "scripted"}, status=behaviour["fail"])
        if not self._authorized(request):
            return web.json_response({"error": "invalid api key"}, status=401)
        return await handler(request)

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self.record])
        handler = getattr(self, self.kind)
        routes = {
            "brave": [("GET", "/res/v1/web/search"), ("GET", "/res/v1/news/search")],
            "tavily": [("POST", "/search")],
            "serper": [("POST", "/search"), ("POST", "/news")],
            "google": [("GET", "/customsearch/v1")],
            "exa": [("POST", "/search")],
        }[self.kind]
        for method, path in routes:
            app.router.add_route(method, path, handler)
        return app
