"""Brave Search API: ``GET {url}/res/v1/web/search?q=...&count=N`` and
``/res/v1/news/search`` with the ``X-Subscription-Token`` header. Answers: web
``{"web": {"results": [{"title", "url", "description"}...]}}``, news ``{"results": [...]}``
(same item fields)."""

from __future__ import annotations

from .base import SearchBackend, SearchResult, first_list


class BraveBackend(SearchBackend):
    name = "brave"
    default_url = "https://api.search.brave.com"

    async def _query(self, path: str, query: str) -> dict:
        params = {"q": query, "count": str(min(self.max_results, 20))}
        return await self.call(path, params=params, headers={"X-Subscription-Token": self.api_key})

    async def search(self, query: str) -> list[SearchResult]:
        data = await self._query("/res/v1/web/search", query)
        items = first_list(data, "web", "results")
        return self.results(items, title="title", url="url", snippet="description")

    async def news(self, query: str) -> list[SearchResult]:
        data = await self._query("/res/v1/news/search", query)
        return self.results(data.get("results"), title="title", url="url", snippet="description")
