"""Google Programmable Search (Custom Search JSON API): ``GET {url}/customsearch/v1?key=
<key>&cx=<engine id>&q=...&num=N`` (``num`` at most 10; the engine id is
``WEB_SEARCH_ENGINE_ID``). Answer: ``{"items": [{"title", "link", "snippet"}...]}`` (no
``items`` when nothing matched). It has no news vertical: ``news`` sorts by date."""

from __future__ import annotations

from .base import SearchBackend, SearchError, SearchResult


class GoogleBackend(SearchBackend):
    name = "google"
    default_url = "https://www.googleapis.com"

    async def _query(self, query: str, **extra: str) -> list[SearchResult]:
        if not self.engine_id:
            raise SearchError("the search backend is not configured (WEB_SEARCH_ENGINE_ID is empty)")
        params = {
            "key": self.api_key,
            "cx": self.engine_id,
            "q": query,
            "num": str(min(self.max_results, 10)),
        }
        data = await self.call("/customsearch/v1", params={**params, **extra})
        return self.results(data.get("items"), title="title", url="link", snippet="snippet")

    async def search(self, query: str) -> list[SearchResult]:
        return await self._query(query)

    async def news(self, query: str) -> list[SearchResult]:
        return await self._query(query, sort="date")
