"""Fake SearXNG: a real loopback server speaking SearXNG's JSON search API, with the pages
its results point at.

``GET /search?q=...&format=json[&categories=news]`` -> ``{"query", "results": [{"title",
"url", "content", "engine"}...]}``; results point at this server's ``/page/<slug>``
(HTML pages). A query containing ``redirect`` also returns a page that redirects to
``http://localhost:<port>/page/python``, a loopback target that tests leave off the
allow-list. ``format`` other than ``json`` is refused with 403, as SearXNG does when the
format is not enabled. ``fail`` (a status) and ``stall`` (seconds) script the next answers.

Other paths: ``/redirect?to=URL`` (302), ``/big`` (1 MB of text), ``/slow`` (sleeps 5 s).
Every request is recorded in ``requests`` (method, path, query).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Self

from aiohttp import web

from tests.fakes.upstream import _bind, _start_runner, _url

PAGES = {
    "python": (
        "Python (programming language)",
        "Python is a high-level programming language created by Guido van Rossum.",
        "<html><head><title>Python</title><script>var x = 1;</script></head><body>"
        "<nav><a href='/'>Home</a> <a href='/menu'>Site menu</a></nav><article>"
        "<h1>Python</h1><p>Python is a high-level, general-purpose programming language. "
        "It was created by Guido van Rossum and first released in 1991.</p></article>"
        "<footer>Copyright footer</footer></body></html>",
    ),
    "django": (
        "Django: the web framework for perfectionists",
        "Django is a Python web framework that encourages rapid development.",
        "<html><body><h1>Django</h1><p>Django 5.2 is a long-term support release.</p></body></html>",
    ),
    "news": (
        "Python 3.14 released",
        "The Python Software Foundation released Python 3.14 today.",
        "<html><body><p>Python 3.14 was released with free-threading support.</p></body></html>",
    ),
}


class FakeSearxng:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.requests: list[dict] = []
        self.behaviours: deque[dict] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return _url(self.host, self.port)

    def page_url(self, slug: str) -> str:
        return f"{self.url}/page/{slug}"

    def script(self, *behaviours: dict) -> None:
        self.behaviours.extend(behaviours)

    def reset(self) -> None:
        self.requests.clear()
        self.behaviours.clear()

    # --- handlers -----------------------------------------------------------------------

    async def search(self, request: web.Request) -> web.Response:
        behaviour = self.behaviours.popleft() if self.behaviours else {}
        if behaviour.get("stall"):
            await asyncio.sleep(behaviour["stall"])
        if behaviour.get("fail"):
            return web.json_response({"error": "scripted"}, status=behaviour["fail"])
        if request.query.get("format") != "json":
            return web.Response(status=403, text="format not enabled")
        query = request.query.get("q", "")
        slugs = ["news"] if request.query.get("categories") == "news" else ["python", "django"]
        results = [
            {"title": PAGES[s][0], "url": self.page_url(s), "content": PAGES[s][1], "engine": "fake"}
            for s in slugs
        ]
        if "redirect" in query:
            results.append(
                {
                    "title": "Moved",
                    "url": f"{self.url}/redirect?to=http://localhost:{self.port}/page/python",
                    "content": "A page that moved.",
                    "engine": "fake",
                }
            )
        return web.json_response({"query": query, "number_of_results": len(results), "results": results})

    async def page(self, request: web.Request) -> web.Response:
        slug = request.match_info["slug"]
        if slug not in PAGES:
            return web.Response(status=404, text="not found")
        return web.Response(text=PAGES[slug][2], content_type="text/html")

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def big(self, request: web.Request) -> web.Response:
        return web.Response(text="x" * (1024 * 1024), content_type="text/plain")

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    @web.middleware
    async def record(self, request: web.Request, handler):
        self.requests.append({"method": request.method, "path": request.path, "query": dict(request.query)})
        return await handler(request)

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self.record])
        app.router.add_get("/search", self.search)
        app.router.add_get("/page/{slug}", self.page)
        app.router.add_get("/redirect", self.redirect)
        app.router.add_get("/big", self.big)
        app.router.add_get("/slow", self.slow)
        return app

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> Self:
        sock = _bind(self.host, 0)
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            runner = loop.run_until_complete(_start_runner(self.build_app(), sock, access_log=False))
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(runner.cleanup())
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-searxng", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake SearXNG failed to start")
        self._loop = loop
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
