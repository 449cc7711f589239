"""The web-search backend contract: a query in, normalised and capped results out."""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
    results whose texts are capped at ``max_chars`` characters each."""

    name = ""

    def __init__(self, *, url: str, api_key: str, timeout: float, max_results: int, max_chars: int) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.max_results = max_results
        self.max_chars = max_chars

    async def search(self, query: str) -> list[SearchResult]:
        raise NotImplementedError

    async def news(self, query: str) -> list[SearchResult]:
        raise NotImplementedError
