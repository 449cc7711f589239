"""OpenAI, OpenAI-compatible servers and Azure OpenAI."""

from .adapter import AzureOpenAIAdapter, OpenAIAdapter

__all__ = ["AzureOpenAIAdapter", "OpenAIAdapter"]
