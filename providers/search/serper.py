"""Serper (Google results): ``POST {url}/search`` and ``/news`` with the ``X-API-KEY``
header and ``{"q", "num"}``. Answers: ``{"organic": [{"title", "link", "snippet"}...]}``
and ``{"news": [{"title", "link", "snippet", "date", "source"}...]}``."""

from __future__ import annotations

from .base import SearchBackend, SearchResult


class SerperBackend(SearchBackend):
    name = "serper"
    default_url = "https://google.serper.dev"

    async def _query(self, path: str, query: str) -> dict:
        body = {"q": query, "num": min(self.max_results, 100)}
        return await self.call(path, body=body, headers={"X-API-KEY": self.api_key})

    async def search(self, query: str) -> list[SearchResult]:
        data = await self._query("/search", query)
        return self.results(data.get("organic"), title="title", url="link", snippet="snippet")

    async def news(self, query: str) -> list[SearchResult]:
        data = await self._query("/news", query)
        return self.results(data.get("news"), title="title", url="link", snippet="snippet")
