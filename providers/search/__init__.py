"""Web-search backends behind one small interface (base.SearchBackend), chosen by the
``WEB_SEARCH_BACKEND`` setting from an explicit registry."""

from __future__ import annotations

from django.conf import settings

from .base import SearchBackend, SearchError, SearchResult
from .searxng import SearxngBackend

BACKENDS: dict[str, type[SearchBackend]] = {
    SearxngBackend.name: SearxngBackend,
}

__all__ = ["BACKENDS", "SearchBackend", "SearchError", "SearchResult", "configured_backend"]


def configured_backend() -> SearchBackend | None:
    """The backend the settings configure, or None when web search is not configured."""
    if not settings.WEB_SEARCH_URL:
        return None
    return BACKENDS[settings.WEB_SEARCH_BACKEND](
        url=settings.WEB_SEARCH_URL,
        api_key="",
        timeout=settings.WEB_SEARCH_TIMEOUT,
        max_results=settings.WEB_SEARCH_MAX_RESULTS,
        max_chars=settings.WEB_SEARCH_MAX_CHARS,
    )
