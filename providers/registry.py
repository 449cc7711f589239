"""Provider type -> adapter: the one explicit registry (a new provider is one folder plus
one line here). Callers ask for a capability, never for a type."""

from __future__ import annotations

from functools import lru_cache

from .anthropic import AnthropicAdapter
from .base import Adapter, Capability
from .gemini import GeminiAdapter
from .midjourney import MidjourneyAdapter
from .openai import AzureOpenAIAdapter, OpenAIAdapter

REGISTRY: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
    "openai-compatible": OpenAIAdapter(),
    "azure": AzureOpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
    "gemini": GeminiAdapter(),
    "midjourney": MidjourneyAdapter(),
}


def get_adapter(provider_type: str) -> Adapter:
    try:
        return REGISTRY[provider_type]
    except KeyError:
        raise LookupError(f"no adapter for provider type {provider_type!r}") from None


@lru_cache(maxsize=256)  # the registry is filled at import and never changes
def supports(provider_type: str, capability: Capability) -> bool:
    adapter = REGISTRY.get(provider_type)
    return adapter is not None and adapter.supports(capability)


def types_with(capability: Capability) -> list[str]:
    return [name for name, adapter in REGISTRY.items() if adapter.supports(capability)]
