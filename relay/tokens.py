"""Local token counting, used only when the upstream reports no usage (or a stream was cut).

The cl100k_base encoding ships in ``relay/data`` (verified against tiktoken's published
SHA-256 at load time): tiktoken would otherwise download it at run time, which fails on
machines without internet access.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from pathlib import Path

import tiktoken

_DATA = Path(__file__).resolve().parent / "data" / "cl100k_base.tiktoken"
_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
    r"""\s*[\r\n]|\s+(?!\S)|\s"""
)
_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    raw = _DATA.read_bytes()
    if hashlib.sha256(raw).hexdigest() != _SHA256:
        raise RuntimeError(f"{_DATA} is corrupt (SHA-256 mismatch)")
    ranks = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    encoder = tiktoken.Encoding(
        name="cl100k_base", pat_str=_PATTERN, mergeable_ranks=ranks, special_tokens=_SPECIAL
    )
    # the Rust side keeps its own copy of the table; tiktoken holds on to the Python dict
    # only to pickle the encoding, which the gateway never does: 13 MB less per worker
    encoder._mergeable_ranks = {}
    return encoder


def count_text(text: str) -> int:
    if not text:
        return 0
    return len(encoding().encode_ordinary(text))  # special tokens' text counted as text


def _content_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                text = part.get("text") or part.get("content")
                if isinstance(text, str):
                    parts.append(text)
                elif isinstance(text, list):
                    parts.append(_content_text(text))
        return "\n".join(parts)
    return ""


def count_chat_prompt(body: dict) -> int:
    """OpenAI's accounting for chat prompts: 3 tokens per message, +3 to prime the reply."""
    total = 3
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        total += 3 + count_text(_content_text(message.get("content")))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            total += count_text(str(function.get("name", ""))) + count_text(
                str(function.get("arguments", ""))
            )
    system = body.get("system")  # Anthropic-shaped bodies
    if system:
        total += count_text(_content_text(system))
    for tool in body.get("tools") or ():
        total += count_text(str(tool))
    return total


def count_prompt_input(value) -> int:
    """Completions ``prompt`` and embeddings ``input``: a string or a list of strings."""
    if isinstance(value, str):
        return count_text(value)
    if isinstance(value, list):
        return sum(count_text(item) if isinstance(item, str) else len(item) for item in value)
    return 0
