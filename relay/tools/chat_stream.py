"""The client's side of a streamed web-search loop on /v1/chat/completions.

``ChatStreamSink`` stands in for the request's ``Context`` while the forwarder streams each
round: the forwarder writes the round's chat chunks to it as the upstream produces them,
and the sink passes the text on to the client at once, keeps the tool calls (the gateway
decides about them when the round ends), holds back the round's finish, usage and
``[DONE]``, and keeps the client's stream alive with SSE comments while nothing is written
(the gateway searching, or the model thinking before a tool call).

When the loop ends, ``finish`` writes what a plain stream ends with: the client's own tool
calls (whole, one chunk), a final chunk with the finish reason and, in its ``delta``, the
``url_citation`` annotations of the whole answer, the usage of all rounds when the client
asked for it (``stream_options.include_usage``), and ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson

from providers.base import SSELineBuffer, StreamTranslator

from ..http import Context

KEEP_ALIVE = b": keep-alive\n\n"
_BASE_FIELDS = ("id", "object", "created", "model", "system_fingerprint")


class ChatStreamSink:
    def __init__(
        self,
        ctx: Context,
        *,
        keepalive: float,
        translator: StreamTranslator | None = None,
        ping: bytes = KEEP_ALIVE,
    ) -> None:
        self.ctx = ctx
        self.translator = translator  # chat SSE -> the client's protocol, when not chat
        if translator is not None:
            translator.keeps_text = False  # the rounds' own translators note the text
        self.ping = ping
        self.started = ctx.started  # read by the forwarder (time to first token)
        self.protocol = ctx.protocol
        self.keepalive = keepalive
        self.open = False  # the client's stream has started
        self.closed = False
        self.text = ""  # the answer's text as the client received it (choice 0)
        self.base: dict = {"object": "chat.completion.chunk", "choices": []}
        self._role_sent = False
        self._lock = asyncio.Lock()
        self._last_write = time.monotonic()
        self._pinger: asyncio.Task | None = None
        self._headers = ()
        self.new_round()

    def new_round(self) -> None:
        self.calls: dict[int, dict] = {}  # the round's tool calls by index, arguments joined
        self.round_text = ""
        self.finish_reason: str | None = None
        self.failed = False
        self._lines = SSELineBuffer()

    # --- the Context interface the forwarder uses for streams ----------------------------

    async def start_stream(self, headers=()) -> None:
        if not self.open:
            self.open = True
            await self.ctx.start_stream(headers)
            self._last_write = time.monotonic()
            self._pinger = asyncio.ensure_future(self._ping())

    async def stream_chunk(self, data: bytes) -> None:
        out = []
        for line in self._lines.lines(data):
            event = self._line(line)
            if event:
                out.append(event)
        if out:
            await self._emit(b"".join(out))

    async def end_stream(self, data: bytes = b"") -> None:
        """The end of one round: an error tail (the round failed) goes to the client now."""
        rest = self._lines.rest()
        if rest:
            await self.stream_chunk(rest + b"\n")
        if data:
            self.failed = True
            await self._write(data)  # already in the client's protocol

    # --- the loop's side ------------------------------------------------------------------

    async def finish(
        self, kept: list[dict], annotations: list[dict], usage: dict | None, *, prefix: bytes = b""
    ) -> None:
        """End the client's stream after the final round (``prefix``: bytes in the client's
        protocol to send first)."""
        if prefix:
            await self.raw(prefix)
        out = []
        if kept:
            delta = {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["name"], "arguments": call["arguments"]},
                    }
                    for index, call in enumerate(kept)
                ]
            }
            out.append(
                self._event({**self.base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            )
        reason = self.finish_reason or "stop"
        if reason == "tool_calls" and not kept:
            reason = "stop"
        delta = {"annotations": annotations} if annotations else {}
        out.append(
            self._event({**self.base, "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]})
        )
        if usage is not None:
            out.append(self._event({**self.base, "choices": [], "usage": usage}))
        out.append(b"data: [DONE]\n\n")
        data = b"".join(out)
        if self.translator is not None:
            data = self.translator.feed(data) + self.translator.close()
        await self.close(data)

    async def fail(self, message: str) -> None:
        await self.close(self.protocol.stream_error(message))

    async def close(self, data: bytes = b"") -> None:
        self.stop()
        if self.open and not self.closed:
            self.closed = True
            async with self._lock:
                await self.ctx.end_stream(data)

    def stop(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None

    # --- inside ---------------------------------------------------------------------------

    async def raw(self, data: bytes) -> None:
        """Bytes already in the client's protocol."""
        if data:
            await self._write(data)

    async def _emit(self, data: bytes) -> None:
        if self.translator is not None:
            data = self.translator.feed(data)
        if data:
            await self._write(data)

    async def _write(self, data: bytes) -> None:
        async with self._lock:
            await self.ctx.stream_chunk(data)
            self._last_write = time.monotonic()

    async def _ping(self) -> None:
        # cancelled when the loop ends; a client gone mid-write ends it too (the loop's own
        # write or the disconnect watcher reports that)
        with contextlib.suppress(asyncio.CancelledError, OSError, RuntimeError):
            while True:
                wait = self._last_write + self.keepalive - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                await self._write(self.ping)

    def _choice(self, delta: dict, finish_reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return self._event({**self.base, "choices": [choice]})

    @staticmethod
    def _event(chunk: dict) -> bytes:
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _line(self, line: bytes) -> bytes | None:
        if not line.startswith(b"data:"):
            return None  # blank lines and comments: the sink writes whole events itself
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return None  # the loop ends the stream
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(chunk, dict) or ("error" in chunk and "choices" not in chunk):
            self.failed = True
            return b"data: " + payload + b"\n\n"  # an error the upstream reported: as it came
        for name in _BASE_FIELDS:
            if name in chunk:
                self.base[name] = chunk[name]
        chunk.pop("usage", None)  # every round's usage is summed by the loop
        choices = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = dict(choice.get("delta") or {})
            for part in delta.pop("tool_calls", None) or ():
                self._note_call(part)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            if self._role_sent:
                delta.pop("role", None)
            elif "role" in delta:
                self._role_sent = True
            content = delta.get("content")
            if isinstance(content, str):
                self.text += content
                self.round_text += content
                if not content and len(delta) > 1:
                    delta.pop("content")
            if delta and (delta.keys() != {"content"} or content):
                choices.append({**choice, "delta": delta, "finish_reason": None})
        if not choices:
            return None
        chunk["choices"] = choices
        return self._event(chunk)

    def _note_call(self, part) -> None:
        if not isinstance(part, dict):
            return
        call = self.calls.setdefault(part.get("index", 0), {"id": "", "name": "", "arguments": ""})
        if part.get("id"):
            call["id"] = part["id"]
        function = part.get("function") or {}
        if function.get("name"):
            call["name"] = function["name"]
        if function.get("arguments"):
            call["arguments"] += function["arguments"]
