"""Anthropic's Messages API: chat translated, /v1/messages and count_tokens passed through."""

from .adapter import AnthropicAdapter

__all__ = ["AnthropicAdapter"]
