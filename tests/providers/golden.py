"""Golden-file helpers for the adapter tests.

Inputs live next to each provider's tests, in ``tests/providers/<provider>/golden/
<case>.in.(json|sse)`` (the Anthropic Messages format's in ``formats/golden/
anthropic_messages``), and the expected outputs in ``<case>[.<variant>].out.(json|sse)``;
names are given as ``<provider>/<case>...``. JSON is compared parsed; SSE is compared as the
sequence of (event name, parsed data) pairs. ``UPDATE_GOLDEN=1`` rewrites the expected
files from the current output (review the diff before committing!).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent
FOLDERS = {
    "anthropic": ROOT / "anthropic" / "golden",
    "gemini": ROOT / "gemini" / "golden",
    "messages": ROOT / "formats" / "golden" / "anthropic_messages",
}


class _Golden:
    """``GOLDEN / "anthropic/case.in.json"`` -> the file in that provider's folder."""

    def __truediv__(self, name: str) -> Path:
        kind, _, rest = name.partition("/")
        return FOLDERS[kind] / rest


GOLDEN = _Golden()
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def read_json(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))


def read_bytes(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()


def parse_sse(data: bytes) -> list[tuple[str | None, Any]]:
    """SSE bytes -> [(event name or None, parsed data)] ("[DONE]" stays a string)."""
    events: list[tuple[str | None, Any]] = []
    text = data.decode("utf-8").replace("\r\n", "\n")
    for raw in text.split("\n\n"):
        if not raw.strip():
            continue
        name = None
        lines = []
        for line in raw.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                lines.append(line[5:].strip())
            else:
                raise AssertionError(f"unexpected SSE line {line!r}")
        payload = "\n".join(lines)
        events.append((name, payload if payload == "[DONE]" else json.loads(payload)))
    return events


def check_json(name: str, actual: Any) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert actual == expected, f"{name} differs from the golden file"


def check_sse(name: str, actual: bytes) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_bytes(actual)
    assert parse_sse(actual) == parse_sse(path.read_bytes()), f"{name} differs from the golden file"


def feed_all(translator: Any, data: bytes, *, step: int | None = None) -> bytes:
    """Feed ``data`` whole (``step=None``) or in ``step``-byte pieces, then close."""
    out = []
    if step is None:
        out.append(translator.feed(data))
    else:
        for start in range(0, len(data), step):
            out.append(translator.feed(data[start : start + step]))
    out.append(translator.close())
    return b"".join(out)


def feed_split_at(translator: Any, data: bytes, cuts: list[int]) -> bytes:
    out = []
    previous = 0
    for cut in [*cuts, len(data)]:
        out.append(translator.feed(data[previous:cut]))
        previous = cut
    out.append(translator.close())
    return b"".join(out)


def usage_fields(usage: Any) -> dict:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
    }
