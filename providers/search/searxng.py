"""SearXNG (self-hosted): ``GET {url}/search?q=...&format=json`` (the instance must enable
the json format in ``search.formats``); ``news`` asks the ``news`` category. Answer:
``{"results": [{"title", "url", "content"}...]}``. No key."""

from __future__ import annotations

from .base import SearchBackend, SearchResult


class SearxngBackend(SearchBackend):
    name = "searxng"
    needs_key = False

    async def _query(self, query: str, **extra: str) -> list[SearchResult]:
        data = await self.call("/search", params={"q": query, "format": "json", **extra})
        return self.results(data.get("results"), title="title", url="url", snippet="content")

    async def search(self, query: str) -> list[SearchResult]:
        return await self._query(query)

    async def news(self, query: str) -> list[SearchResult]:
        return await self._query(query, categories="news")
