"""midjourney-proxy servers: the task capability (submit, fetch, list-by-condition) and the
health probe, as pure translation. The relay (``relay.endpoints.midjourney``) does the I/O
and ``jobs`` keeps the tasks."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from providers.base import Adapter, Capability, Target, UpstreamRequest

ACCEPTED = (1, 21, 22)  # submitted, already exists, queued: all mean the task is in
QUEUE_FULL = 23  # try the next provider
BANNED = 24  # banned prompt: properties.bannedWord
FINAL = frozenset({"SUCCESS", "FAILURE", "CANCEL"})
STATUSES = ("NOT_START", "SUBMITTED", "MODAL", "IN_PROGRESS", "FAILURE", "SUCCESS", "CANCEL")


@dataclass(slots=True)
class SubmitResult:
    code: int
    description: str
    upstream_id: str  # the upstream's task id when accepted, else ""
    properties: dict = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.code in ACCEPTED and bool(self.upstream_id)


@dataclass(slots=True)
class TaskState:
    """One upstream task as the gateway keeps it."""

    upstream_id: str
    status: str
    progress: int  # 0..100
    prompt_en: str = ""
    description: str = ""
    image_url: str = ""
    image_urls: list = field(default_factory=list)
    buttons: list = field(default_factory=list)
    fail_reason: str = ""
    start_ms: int | None = None
    finish_ms: int | None = None
    properties: dict = field(default_factory=dict)


def _progress(value) -> int:
    text = str(value or "0").strip().rstrip("%") or "0"
    try:
        return max(0, min(100, int(float(text))))
    except ValueError:
        return 0


def _ms(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def parse_task(payload: dict) -> TaskState:
    status = payload.get("status") if payload.get("status") in STATUSES else "SUBMITTED"
    urls = payload.get("imageUrls") or []
    return TaskState(
        upstream_id=str(payload.get("id") or ""),
        status=status,
        progress=_progress(payload.get("progress")),
        prompt_en=str(payload.get("promptEn") or ""),
        description=str(payload.get("description") or ""),
        image_url=str(payload.get("imageUrl") or ""),
        image_urls=[u.get("url") if isinstance(u, dict) else str(u) for u in urls if u],
        buttons=[b for b in payload.get("buttons") or [] if isinstance(b, dict)],
        fail_reason=str(payload.get("failReason") or ""),
        start_ms=_ms(payload.get("startTime")),
        finish_ms=_ms(payload.get("finishTime")),
        properties=payload.get("properties") if isinstance(payload.get("properties"), dict) else {},
    )


class MidjourneyAdapter(Adapter):
    name = "midjourney"
    capabilities = frozenset({Capability.PROBE, Capability.TASKS})

    @staticmethod
    def _headers(target: Target) -> dict[str, str]:
        return {"mj-api-secret": target.api_key, "content-type": "application/json", **target.extra_headers}

    def probe_request(self, target: Target) -> UpstreamRequest:
        headers = {"mj-api-secret": target.api_key, **target.extra_headers}
        return UpstreamRequest("GET", f"{target.base_url}/mj/task/list", headers, None)

    # --- tasks ----------------------------------------------------------------------------

    def task_submit_request(self, kind: str, body: dict, target: Target) -> UpstreamRequest:
        """``kind``: imagine, change, simple-change, action... (the path under /mj/submit/);
        ``body`` already carries the upstream's own task ids."""
        url = f"{target.base_url}/mj/submit/{kind}"
        return UpstreamRequest("POST", url, self._headers(target), orjson.dumps(body))

    def task_submit_parse(self, payload: bytes) -> SubmitResult:
        data = orjson.loads(payload)
        if not isinstance(data, dict):
            raise ValueError("the submit answer is not an object")
        code = data.get("code")
        code = code if isinstance(code, int) and not isinstance(code, bool) else -1
        properties = data.get("properties") if isinstance(data.get("properties"), dict) else {}
        result = data.get("result")
        upstream_id = str(result) if isinstance(result, str | int) and not isinstance(result, bool) else ""
        return SubmitResult(code, str(data.get("description") or ""), upstream_id, properties)

    def task_fetch_request(self, upstream_id: str, target: Target) -> UpstreamRequest:
        url = f"{target.base_url}/mj/task/{upstream_id}/fetch"
        return UpstreamRequest("GET", url, self._headers(target), None)

    def task_list_request(self, upstream_ids: list[str], target: Target) -> UpstreamRequest:
        url = f"{target.base_url}/mj/task/list-by-condition"
        return UpstreamRequest("POST", url, self._headers(target), orjson.dumps({"ids": upstream_ids}))

    def task_parse(self, payload: bytes) -> TaskState:
        data = orjson.loads(payload)
        if not isinstance(data, dict):
            raise ValueError("the task is not an object")
        return parse_task(data)

    def task_list_parse(self, payload: bytes) -> list[TaskState]:
        data = orjson.loads(payload)
        if not isinstance(data, list):
            raise ValueError("list-by-condition did not answer an array")
        return [parse_task(item) for item in data if isinstance(item, dict)]


__all__ = ["MidjourneyAdapter", "SubmitResult", "TaskState", "parse_task"]
