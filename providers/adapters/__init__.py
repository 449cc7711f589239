"""Provider adapters behind an explicit registry (see base.Adapter for the contract)."""

from __future__ import annotations

from .anthropic import AnthropicAdapter
from .base import Adapter
from .gemini import GeminiAdapter
from .openai import AzureOpenAIAdapter, OpenAIAdapter

REGISTRY: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
    "openai-compatible": OpenAIAdapter(),
    "azure": AzureOpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
    "gemini": GeminiAdapter(),
}


def get_adapter(provider_type: str) -> Adapter:
    try:
        return REGISTRY[provider_type]
    except KeyError:
        raise LookupError(f"no adapter for provider type {provider_type!r}") from None
