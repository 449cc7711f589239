"""Tavily: ``POST {url}/search`` with ``Authorization: Bearer <key>`` and ``{"query",
"max_results", "topic": "general"|"news"}``. Answer: ``{"results": [{"title", "url",
"content", "score"}...]}`` (``content``: the relevant extract, used as the snippet)."""

from __future__ import annotations

from .base import SearchBackend, SearchResult


class TavilyBackend(SearchBackend):
    name = "tavily"
    default_url = "https://api.tavily.com"

    async def _query(self, query: str, topic: str) -> list[SearchResult]:
        body = {"query": query, "max_results": min(self.max_results, 20), "topic": topic}
        data = await self.call("/search", body=body, headers={"Authorization": f"Bearer {self.api_key}"})
        return self.results(data.get("results"), title="title", url="url", snippet="content")

    async def search(self, query: str) -> list[SearchResult]:
        return await self._query(query, "general")

    async def news(self, query: str) -> list[SearchResult]:
        return await self._query(query, "news")
