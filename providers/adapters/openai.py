"""OpenAI and OpenAI-compatible upstreams (vLLM, Ollama, DeepSeek, OpenRouter...).

The client already speaks this protocol, so translation is nearly the identity: swap the
model name, merge extra params, ask for the final usage chunk on streams and strip it
again when the client did not ask for it.
"""

from __future__ import annotations

import orjson

from .base import (
    SSE_DONE,
    Adapter,
    SSELineBuffer,
    StreamTranslator,
    Target,
    UpstreamRequest,
    Usage,
)


def usage_from_openai(data: dict | None) -> Usage | None:
    if not isinstance(data, dict):
        return None
    details = data.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(data.get("prompt_tokens") or 0),
        completion_tokens=int(data.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )


def prepare_body(body: dict, target: Target, *, stream: bool) -> dict:
    out = dict(body)
    out["model"] = target.upstream_model
    if target.extra_params:
        out.update(target.extra_params)
    if stream:
        options = dict(out.get("stream_options") or {})
        options["include_usage"] = True
        out["stream_options"] = options
    return out


class OpenAIStreamTranslator(StreamTranslator):
    """Passes OpenAI SSE through line by line, noting usage and the generated text."""

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self.model = model.encode()
        self.include_usage = include_usage
        self.buffer = SSELineBuffer()
        self.usage = None
        self.finished = False
        self.text_chars = 0
        self.text_parts: list[str] = []
        self.error: str | None = None

    def _line(self, line: bytes) -> bytes | None:
        if not line.startswith(b"data:"):
            return line + b"\n" if line else b"\n"
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.finished = True
            return line + b"\n"
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return line + b"\n"
        if "error" in chunk and "choices" not in chunk:
            error = chunk["error"]
            self.error = error.get("message") if isinstance(error, dict) else str(error)
            self.finished = True
            return line + b"\n"
        usage = chunk.get("usage")
        if usage:
            self.usage = usage_from_openai(usage)
            if not self.include_usage:
                if not chunk.get("choices"):
                    return None  # the usage-only chunk the client did not ask for
                chunk.pop("usage", None)
                return b"data: " + orjson.dumps(chunk) + b"\n"
        elif "usage" in chunk and not self.include_usage:
            chunk.pop("usage")
            self._collect(chunk)
            return b"data: " + orjson.dumps(chunk) + b"\n"
        self._collect(chunk)
        return line + b"\n"

    def _collect(self, chunk: dict) -> None:
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content") or choice.get("text")  # chat or legacy completions
            if content:
                self.text_parts.append(content)
                self.text_chars += len(content)
            for call in delta.get("tool_calls") or ():
                args = (call.get("function") or {}).get("arguments")
                if args:
                    self.text_parts.append(args)
                    self.text_chars += len(args)

    def feed(self, data: bytes) -> bytes:
        out = []
        skip_blank = False
        for line in self.buffer.lines(data):
            if skip_blank and not line:
                skip_blank = False
                continue
            translated = self._line(line)
            if translated is None:
                skip_blank = True
                continue
            out.append(translated)
        return b"".join(out)

    def close(self) -> bytes:
        rest = self.buffer.rest()
        if rest:
            translated = self._line(rest)
            return translated + b"\n" if translated else b""
        return b""


class OpenAIAdapter(Adapter):
    name = "openai"

    def url(self, target: Target, path: str) -> str:
        return f"{target.base_url}{path}"

    def headers(self, target: Target) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if target.api_key:
            headers["authorization"] = f"Bearer {target.api_key}"
        headers.update(target.extra_headers)
        return headers

    def chat_request(self, body: dict, target: Target, *, stream: bool) -> UpstreamRequest:
        return UpstreamRequest(
            "POST",
            self.url(target, "/chat/completions"),
            self.headers(target),
            orjson.dumps(prepare_body(body, target, stream=stream)),
        )

    def passthrough_request(
        self, path: str, body: dict, target: Target, *, stream: bool = False
    ) -> UpstreamRequest:
        """Completions and embeddings: same protocol, only the model is swapped."""
        return UpstreamRequest(
            "POST",
            self.url(target, path),
            self.headers(target),
            orjson.dumps(prepare_body(body, target, stream=stream)),
        )

    def chat_response(self, payload: dict, *, model: str) -> tuple[dict, Usage]:
        return payload, usage_from_openai(payload.get("usage"))

    def chat_stream(self, *, model: str, include_usage: bool) -> StreamTranslator:
        return OpenAIStreamTranslator(model=model, include_usage=include_usage)


class AzureOpenAIAdapter(OpenAIAdapter):
    """Azure OpenAI: the deployment is in the URL, the key in ``api-key``."""

    name = "azure"
    default_api_version = "2024-10-21"

    def url(self, target: Target, path: str) -> str:
        version = target.api_version or self.default_api_version
        return f"{target.base_url}/openai/deployments/{target.upstream_model}{path}?api-version={version}"

    def headers(self, target: Target) -> dict[str, str]:
        headers = {"content-type": "application/json", "api-key": target.api_key}
        headers.update(target.extra_headers)
        return headers


__all__ = ["SSE_DONE", "AzureOpenAIAdapter", "OpenAIAdapter", "OpenAIStreamTranslator", "usage_from_openai"]
