"""Exa: ``POST {url}/search`` with the ``x-api-key`` header and ``{"query", "numResults",
"type": "auto", "contents": {"text": {"maxCharacters": N}}}`` (``"category": "news"`` for
news). Answer: ``{"results": [{"title", "url", "publishedDate", "text"}...]}``: the page
text comes with the results (a snippet is cut from it)."""

from __future__ import annotations

from .base import SearchBackend, SearchResult, cap

SNIPPET_CHARS = 300


class ExaBackend(SearchBackend):
    name = "exa"
    default_url = "https://api.exa.ai"

    async def _query(self, query: str, **extra: str) -> list[SearchResult]:
        body = {
            "query": query,
            "numResults": min(self.max_results, 100),
            "type": "auto",
            "contents": {"text": {"maxCharacters": self.max_chars}},
            **extra,
        }
        data = await self.call("/search", body=body, headers={"x-api-key": self.api_key})
        found = self.results(data.get("results"), title="title", url="url", snippet="text", content="text")
        return [
            SearchResult(r.title, r.url, cap(" ".join(r.snippet.split()), SNIPPET_CHARS), r.content)
            for r in found
        ]

    async def search(self, query: str) -> list[SearchResult]:
        return await self._query(query)

    async def news(self, query: str) -> list[SearchResult]:
        return await self._query(query, category="news")
