"""OpenAI and OpenAI-compatible upstreams (vLLM, Ollama, DeepSeek, OpenRouter...).

The client already speaks this protocol, so translation is nearly the identity: swap the
model name, merge extra params, ask for the final usage chunk on streams and strip it
again when the client did not ask for it.
"""

from __future__ import annotations

import orjson

from providers.base import (
    SSE_DONE,
    Adapter,
    Capability,
    StreamTranslator,
    Target,
    UpstreamModel,
    UpstreamRequest,
    Usage,
    listed_models,
)
from providers.formats.openai_chat import usage_from_openai
from providers.formats.openai_responses import ResponsesPassthroughStream, passthrough_body


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
        super().__init__()
        self.model = model
        self.include_usage = include_usage

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
        if not isinstance(chunk, dict):
            return line + b"\n"
        if "error" in chunk and "choices" not in chunk:
            error = chunk["error"]
            self.error = error.get("message") if isinstance(error, dict) else str(error)
            self.finished = True
            return line + b"\n"
        changed = False
        usage = chunk.get("usage")
        if usage:
            self.usage = usage_from_openai(usage)
        if "usage" in chunk and not self.include_usage:
            if usage and not chunk.get("choices"):
                return None  # the usage-only chunk the client did not ask for
            chunk.pop("usage")
            changed = True
        if self.model and chunk.get("model", self.model) != self.model:
            chunk["model"] = self.model  # the name the client asked for, not the upstream's
            changed = True
        self._collect(chunk)
        return b"data: " + orjson.dumps(chunk) + b"\n" if changed else line + b"\n"

    def _collect(self, chunk: dict) -> None:
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content") or choice.get("text")  # chat or legacy completions
            if content:
                self.collect(content)
            for call in delta.get("tool_calls") or ():
                args = (call.get("function") or {}).get("arguments")
                if args:
                    self.collect(args)

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
    capabilities = frozenset(
        {
            Capability.CHAT,
            Capability.COMPLETIONS,
            Capability.EMBEDDINGS,
            Capability.RESPONSES,
            Capability.PROBE,
            Capability.MODEL_LIST,
        }
    )

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

    def completions_request(self, body: dict, target: Target, *, stream: bool) -> UpstreamRequest:
        """Same protocol: only the model is swapped (and usage asked for on streams)."""
        return UpstreamRequest(
            "POST",
            self.url(target, "/completions"),
            self.headers(target),
            orjson.dumps(prepare_body(body, target, stream=stream)),
        )

    def embeddings_request(self, body: dict, target: Target) -> UpstreamRequest:
        return UpstreamRequest(
            "POST",
            self.url(target, "/embeddings"),
            self.headers(target),
            orjson.dumps(prepare_body(body, target, stream=False)),
        )

    # Responses API, passed through (only for providers with ``responses_api`` on)
    def responses_url(self, target: Target, suffix: str = "", query: str = "") -> str:
        return f"{target.base_url}/responses{suffix}" + (f"?{query}" if query else "")

    def responses_request(self, body: dict, target: Target, *, stream: bool) -> UpstreamRequest:
        out = passthrough_body(body, upstream_model=target.upstream_model, extra_params=target.extra_params)
        return UpstreamRequest("POST", self.responses_url(target), self.headers(target), orjson.dumps(out))

    def responses_stored_request(
        self, method: str, response_id: str, target: Target, *, action: str = "", query: str = ""
    ) -> UpstreamRequest:
        suffix = f"/{response_id}" + (f"/{action}" if action else "")
        headers = self.headers(target)
        headers.pop("content-type", None)
        return UpstreamRequest(method, self.responses_url(target, suffix, query), headers, None)

    def responses_stream(self, *, model: str, on_done=None) -> StreamTranslator:
        return ResponsesPassthroughStream(model=model, on_done=on_done)

    def models_request(self, target: Target) -> UpstreamRequest:
        headers = self.headers(target)
        headers.pop("content-type", None)
        return UpstreamRequest("GET", self.url(target, "/models"), headers, None)

    def models_response(self, payload: bytes) -> list[UpstreamModel]:
        return listed_models(payload, "data", owner_field="owned_by")

    def probe_request(self, target: Target) -> UpstreamRequest:
        """A one-token chat when the probe has a model, else the model list."""
        if not target.upstream_model:
            return self.models_request(target)
        body = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        return self.chat_request(body, target, stream=False)

    def chat_response(self, payload: dict, *, model: str) -> tuple[dict, Usage | None]:
        payload["model"] = model
        return payload, usage_from_openai(payload.get("usage"))

    def chat_stream(self, *, model: str, include_usage: bool) -> StreamTranslator:
        return OpenAIStreamTranslator(model=model, include_usage=include_usage)


class AzureOpenAIAdapter(OpenAIAdapter):
    """Azure OpenAI: the deployment is in the URL, the key in ``api-key``."""

    name = "azure"
    default_api_version = "2024-10-21"
    # a key lists no deployments (that is Azure's management API): routes name them by hand
    capabilities = OpenAIAdapter.capabilities - {Capability.MODEL_LIST}

    def url(self, target: Target, path: str) -> str:
        version = target.api_version or self.default_api_version
        return f"{target.base_url}/openai/deployments/{target.upstream_model}{path}?api-version={version}"

    def headers(self, target: Target) -> dict[str, str]:
        headers = {"content-type": "application/json", "api-key": target.api_key}
        headers.update(target.extra_headers)
        return headers

    probe_needs_model = True  # a deployment has no model list: always a one-token chat
    # api-versions of the preview Responses surface (/openai/responses?api-version=...);
    # any other (a chat api-version, or none) uses the v1 surface (/openai/v1/responses)
    responses_preview_from = "2025-03-01"

    def responses_url(self, target: Target, suffix: str = "", query: str = "") -> str:
        """Azure's Responses API is not per deployment: the deployment is the body's
        ``model``. The v1 surface needs no api-version; a preview api-version (2025-03-01
        or later, ``...-preview``) selects the older preview path."""
        version = target.api_version
        if version.endswith("preview") and version >= self.responses_preview_from:
            params = f"api-version={version}" + (f"&{query}" if query else "")
            return f"{target.base_url}/openai/responses{suffix}?{params}"
        return f"{target.base_url}/openai/v1/responses{suffix}" + (f"?{query}" if query else "")

    def probe_request(self, target: Target) -> UpstreamRequest:
        body = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        return self.chat_request(body, target, stream=False)


__all__ = ["SSE_DONE", "AzureOpenAIAdapter", "OpenAIAdapter", "OpenAIStreamTranslator", "usage_from_openai"]
