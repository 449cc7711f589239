"""The midjourney-proxy dialect: every answer is ``{code, description, result, properties}``;
code 1 means accepted, anything else is an error (4 validation, 3 not found, 9 failure,
23 queue full, 24 banned prompt). Gateway errors keep their HTTP status."""

from __future__ import annotations

import orjson

from ..errors import RelayError
from . import Protocol

SUCCESS = 1
NOT_FOUND = 3
VALIDATION_ERROR = 4
FAILURE = 9
QUEUE_REJECTED = 23
BANNED_PROMPT = 24


def answer(code: int, description: str, result=None, properties: dict | None = None) -> bytes:
    return orjson.dumps(
        {"code": code, "description": description, "result": result, "properties": properties or {}}
    )


def error_code(status: int) -> int:
    if status == 404:
        return NOT_FOUND
    if status in (400, 413):
        return VALIDATION_ERROR
    return FAILURE


class MidjourneyProtocol(Protocol):
    def error_body(self, exc: RelayError) -> bytes:
        properties = {"status": exc.status}
        if exc.code:
            properties["error"] = exc.code
        if exc.param:
            properties["param"] = exc.param
        return answer(error_code(exc.status), exc.message, None, properties)

    def stream_error(self, message: str) -> bytes:  # no streams in this protocol
        return answer(FAILURE, message)


MIDJOURNEY = MidjourneyProtocol("midjourney", "MidjourneyError")

SCHEMAS: dict[str, dict] = {
    "MidjourneyError": {
        "type": "object",
        "required": ["code", "description", "result", "properties"],
        "properties": {
            "code": {
                "type": "integer",
                "description": "3 not found, 4 invalid request, 9 failure.",
                "example": 4,
            },
            "description": {"type": "string"},
            "result": {"nullable": True, "example": None},
            "properties": {"type": "object", "additionalProperties": True},
        },
    }
}
