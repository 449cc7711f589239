"""Web-search backends behind one small interface (base.SearchBackend), chosen by the
``WEB_SEARCH_BACKEND`` setting from an explicit registry."""

from __future__ import annotations

from django.conf import settings

from .base import SearchBackend, SearchError, SearchResult
from .brave import BraveBackend
from .exa import ExaBackend
from .google import GoogleBackend
from .searxng import SearxngBackend
from .serper import SerperBackend
from .tavily import TavilyBackend

BACKENDS: dict[str, type[SearchBackend]] = {
    backend.name: backend
    for backend in (SearxngBackend, BraveBackend, TavilyBackend, SerperBackend, GoogleBackend, ExaBackend)
}

__all__ = ["BACKENDS", "SearchBackend", "SearchError", "SearchResult", "configured_backend"]


def configured_backend() -> SearchBackend | None:
    """The backend the settings configure, or None when web search is not configured: no
    URL for a self-hosted backend (SearXNG), no API key for a hosted one."""
    backend = BACKENDS[settings.WEB_SEARCH_BACKEND]
    url = settings.WEB_SEARCH_URL or backend.default_url
    if not url or (backend.needs_key and not settings.WEB_SEARCH_API_KEY):
        return None
    return backend(
        url=url,
        api_key=settings.WEB_SEARCH_API_KEY,
        timeout=settings.WEB_SEARCH_TIMEOUT,
        max_results=settings.WEB_SEARCH_MAX_RESULTS,
        max_chars=settings.WEB_SEARCH_MAX_CHARS,
        engine_id=settings.WEB_SEARCH_ENGINE_ID,
    )
