"""GET /v1/models and GET /v1/models/{model}: the models this key may use."""

from __future__ import annotations

import orjson

from ..config import CONFIG, ModelInfo
from ..errors import RelayError
from ..http import Context
from ..openapi import ref
from ..protocols.openai import OPENAI
from . import Doc, Endpoint


def _model_object(info: ModelInfo) -> dict:
    return {"id": info.slug, "object": "model", "created": info.created, "owned_by": info.owned_by}


async def list_models(ctx: Context, relay) -> None:
    catalog = await CONFIG.all_models()
    data = [_model_object(m) for m in catalog if ctx.key.model_allowed(m.slug)]
    await ctx.respond(200, orjson.dumps({"object": "list", "data": data}))


async def retrieve_model(ctx: Context, relay) -> None:
    slug = ctx.path[len("/v1/models/") :]
    info = await CONFIG.model(slug) if ctx.key.model_allowed(slug) else None
    if info is None or not info.routes:
        raise RelayError(
            404, f"The model '{slug}' does not exist or you do not have access to it.", code="model_not_found"
        )
    await ctx.respond(200, orjson.dumps(_model_object(info)))


ENDPOINTS = [
    Endpoint(
        "/v1/models",
        "GET",
        OPENAI,
        handle=list_models,
        doc=Doc(
            "relay_models_list", "Models this key may call", "relay: models", "RelayModelList", "The models."
        ),
    ),
    Endpoint(
        "/v1/models/",
        "GET",
        OPENAI,
        handle=retrieve_model,
        prefix=True,
        doc=Doc(
            "relay_models_retrieve",
            "One model",
            "relay: models",
            "RelayModel",
            "The model.",
            parameters=({"name": "model", "in": "path", "required": True, "schema": {"type": "string"}},),
            path="/v1/models/{model}",
        ),
    ),
]


# --- OpenAPI: the shapes this module answers with ------------------------------------

SCHEMAS: dict[str, dict] = {
    "RelayModel": {
        "type": "object",
        "required": ["id", "object"],
        "properties": {
            "id": {"type": "string", "example": "gpt-4o-mini"},
            "object": {"type": "string", "enum": ["model"]},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
    },
    "RelayModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": ref("RelayModel")},
        },
    },
}
