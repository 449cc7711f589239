"""The contract between the relay and settlement: one typed usage event per request.

The relay builds a :class:`UsageEvent` when a request ends, whatever happened; it travels
as JSON (orjson serialises the dataclass) through Redis (the counter store's flush or
the usage queue) or as the object itself in process, and settlement reads it back with
:meth:`UsageEvent.coerce`. The queue keys live here too, so neither side imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import orjson

QUEUE_KEY = "gw:usage"  # events waiting for settlement (a Redis list)
PROCESSING_KEY = "gw:usage:processing"  # the batch being settled (replayed after a crash)
SETTLED_AT_KEY = "gw:usage:settled-at"  # when a settlement run last finished (readiness)


@dataclass(slots=True)
class UsageEvent:
    request_id: str  # the billing key: one charge per id
    ts: float  # wall-clock start of the request
    user_id: int | None
    key_id: int | None
    provider_id: int | None
    price_id: int | None
    request_type: str
    endpoint: str
    model_requested: str
    model_upstream: str
    model_billed: str
    providers_tried: list
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    usage_estimated: bool  # counted locally (the upstream gave no usage)
    cost: int  # nanos
    status_code: int
    error: str
    latency_ms: int
    ttft_ms: int | None
    client_ip: str | None
    request_bytes: int
    response_bytes: int
    client_disconnected: bool
    # [quota id, period start, settle kind] of each quota the request counts in
    quotas: list = field(default_factory=list)
    # requests answered by several upstream calls (web search): rounds, searches, costs
    breakdown: dict = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def model(self) -> str:
        """The model name the charge is for."""
        return self.model_billed or self.model_requested

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def coerce(cls, value: UsageEvent | dict[str, Any] | bytes) -> UsageEvent:
        """An event from the queue: the object itself, its JSON, or its decoded dict.
        Fields this version does not know are ignored; missing ones take neutral values."""
        if isinstance(value, cls):
            return value
        data = orjson.loads(value) if isinstance(value, bytes | str) else value
        known = {name: data[name] for name in _FIELDS if name in data}
        return cls(**{**_DEFAULTS, **known})


_FIELDS = tuple(f.name for f in fields(UsageEvent))
_DEFAULTS: dict[str, Any] = {
    "user_id": None, "key_id": None, "provider_id": None, "price_id": None, "request_type": "",
    "endpoint": "", "model_requested": "", "model_upstream": "", "model_billed": "", "providers_tried": [],
    "stream": False, "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0,
    "usage_estimated": False, "cost": 0, "status_code": 200, "error": "", "latency_ms": 0, "ttft_ms": None,
    "client_ip": None, "request_bytes": 0, "response_bytes": 0, "client_disconnected": False,
}  # fmt: skip
