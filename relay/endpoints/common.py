"""What every endpoint module needs: the JSON body, the model, and its routes."""

from __future__ import annotations

import orjson

from providers.base import Capability
from providers.registry import supports

from ..config import CONFIG, ModelInfo, Route
from ..errors import RelayError
from ..http import Context


def parse_json(raw: bytes) -> dict:
    if not raw:
        raise RelayError(400, "The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RelayError(400, f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise RelayError(400, "The request body must be a JSON object.")
    return body


def require_model(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RelayError(
            400, "You must provide a model parameter.", param="model", code="missing_required_parameter"
        )
    return model


def positive_int(body: dict, name: str, *, required: bool = False, message: str | None = None) -> None:
    value = body.get(name)
    if value is None and not required:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RelayError(400, message or f"'{name}' must be a positive integer.", param=name)


async def resolve(
    ctx: Context, model: str, *capabilities: Capability, what: str = ""
) -> tuple[ModelInfo, list[Route]]:
    """The model and the routes whose provider type has one of ``capabilities``.

    403 when the key may not use the model, 404 when it does not exist, 400 when it exists
    but none of its providers can serve this endpoint, 503 when none is enabled."""
    if not ctx.key.model_allowed(model):
        raise RelayError(
            403,
            f"This API key is not allowed to use the model '{model}'.",
            code="model_not_allowed",
            param="model",
        )
    info = await CONFIG.model(model)
    if info is None:
        raise RelayError(
            404,
            f"The model '{model}' does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    if not info.routes:
        raise RelayError(503, f"No provider is available for model '{model}'.", code="no_provider")
    routes = [r for r in info.routes if any(supports(r.provider_type, c) for c in capabilities)]
    if not routes:
        kinds = ", ".join(sorted({r.provider_type for r in info.routes}))
        raise RelayError(
            400,
            f"The model '{model}' does not support {what or capabilities[0].value} "
            f"(it is served by providers of type {kinds}).",
            param="model",
            code="unsupported_capability",
        )
    return info, routes


def stream_flag(body: dict) -> bool:
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise RelayError(400, "'stream' must be a boolean.", param="stream")
    return bool(stream)
