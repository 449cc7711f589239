"""SearXNG (self-hosted): ``GET {url}/search?q=...&format=json`` (the instance must enable
the json format in ``search.formats``); ``news`` asks the ``news`` category."""

from __future__ import annotations

import aiohttp
import orjson
from yarl import URL

from core import outbound

from .base import SearchBackend, SearchError, SearchResult, cap


class SearxngBackend(SearchBackend):
    name = "searxng"

    def trusted(self) -> list[str]:
        """The operator chose this backend: its host:port is exempt from the outbound check."""
        url = URL(self.url)
        return [f"{url.raw_host}:{url.port}"] if url.raw_host and url.port else []

    async def _query(self, query: str, **extra: str) -> list[SearchResult]:
        try:
            result = await outbound.fetch(
                f"{self.url}/search",
                params={"q": query, "format": "json", **extra},
                headers={"Accept": "application/json"},
                timeout=self.timeout,
                trusted=self.trusted(),
            )
        except (TimeoutError, outbound.OutboundRefused, aiohttp.ClientError, ValueError) as exc:
            raise SearchError(f"the search backend could not be reached ({type(exc).__name__})") from None
        if result.status != 200:
            raise SearchError(f"the search backend answered {result.status}")
        try:
            items = orjson.loads(result.body).get("results") or []
        except (orjson.JSONDecodeError, AttributeError):
            raise SearchError("the search backend answered with an unreadable body") from None
        results = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("url"), str):
                continue
            snippet = str(item.get("content") or "")
            results.append(
                SearchResult(
                    title=cap(str(item.get("title") or ""), self.max_chars),
                    url=item["url"],
                    snippet=cap(snippet, self.max_chars),
                    content="",
                )
            )
            if len(results) >= self.max_results:
                break
        return results

    async def search(self, query: str) -> list[SearchResult]:
        return await self._query(query)

    async def news(self, query: str) -> list[SearchResult]:
        return await self._query(query, categories="news")
