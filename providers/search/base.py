"""The web-search backend contract: a query in, normalised and capped results out.

Each backend is one module with a ``SearchBackend`` subclass: it builds its API's request
and reads its answer; ``SearchBackend.call`` does the HTTP under the outbound rules (the
configured backend's host and port are trusted: the operator chose them) and turns every
failure into ``SearchError``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import orjson
from yarl import URL

from core import outbound


class SearchError(Exception):
    """The backend could not answer (down, timed out, refused, unreadable)."""


@dataclass(frozen=True, slots=True)
class SearchResult:
    title: str
    url: str
    snippet: str
    content: str = ""  # page text, when the backend or the crawler supplied it

    def as_dict(self) -> dict:
        return asdict(self)


def cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


class SearchBackend:
    """One module per backend; ``search`` and ``news`` return at most ``max_results``
    results whose texts are capped at ``max_chars`` characters each. ``default_url`` is
    the public API's base, used when ``WEB_SEARCH_URL`` is empty (SearXNG has none: it is
    self-hosted); ``needs_key``: the API refuses requests without ``WEB_SEARCH_API_KEY``."""

    name = ""
    default_url = ""
    needs_key = True

    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        timeout: float,
        max_results: int,
        max_chars: int,
        engine_id: str = "",
    ) -> None:
        self.url = (url or self.default_url).rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.max_results = max_results
        self.max_chars = max_chars
        self.engine_id = engine_id

    async def search(self, query: str) -> list[SearchResult]:
        raise NotImplementedError

    async def news(self, query: str) -> list[SearchResult]:
        raise NotImplementedError

    # --- shared by the backends -----------------------------------------------------------

    def trusted(self) -> list[str]:
        """The operator chose this backend: its host:port is exempt from the outbound check."""
        url = URL(self.url)
        return [f"{url.raw_host}:{url.port}"] if url.raw_host and url.port else []

    async def call(
        self,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict:
        """GET (or POST ``body`` as JSON) ``{url}{path}``: the API's JSON object."""
        sent = {"Accept": "application/json", **(headers or {})}
        if body is not None:
            sent["Content-Type"] = "application/json"
        try:
            result = await outbound.fetch(
                f"{self.url}{path}",
                method="GET" if body is None else "POST",
                params=params,
                data=None if body is None else orjson.dumps(body),
                headers=sent,
                timeout=self.timeout,
                trusted=self.trusted(),
            )
        except (TimeoutError, outbound.OutboundRefused, outbound.OutboundFailed, ValueError) as exc:
            raise SearchError(
                f"the search backend could not be reached ({outbound.failure_kind(exc)})"
            ) from None
        if result.status != 200:
            raise SearchError(f"the search backend answered {result.status}")
        try:
            data = orjson.loads(result.body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise SearchError("the search backend answered with an unreadable body")
        return data

    def results(self, items, *, title: str, url: str, snippet: str, content: str = "") -> list[SearchResult]:
        """Normalised results from the API's items (their field names given), capped."""
        out: list[SearchResult] = []
        for item in items if isinstance(items, list) else ():
            if not isinstance(item, dict) or not isinstance(item.get(url), str) or not item[url]:
                continue
            out.append(
                SearchResult(
                    title=cap(str(item.get(title) or ""), self.max_chars),
                    url=item[url],
                    snippet=cap(str(item.get(snippet) or ""), self.max_chars),
                    content=cap(str(item.get(content) or ""), self.max_chars) if content else "",
                )
            )
            if len(out) >= self.max_results:
                break
        return out


def first_list(data: dict, *path: str) -> list:
    """``data[path[0]][path[1]]...`` when it is a list, else ``[]``."""
    value: object = data
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value if isinstance(value, list) else []


__all__: Iterable[str] = ["SearchBackend", "SearchError", "SearchResult", "cap", "first_list"]
