"""Google's Gemini API (generateContent)."""

from .adapter import GeminiAdapter

__all__ = ["GeminiAdapter"]
