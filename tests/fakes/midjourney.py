"""Fake midjourney-proxy: a real loopback HTTP server for tests (and a standalone demo).

Standalone::

    python -m tests.fakes.midjourney --host 127.0.0.1 --port 9200 [--secret S]

In tests::

    with FakeMidjourney(secret="mj-secret") as fake:
        fake.script({"code": 23})           # the next submit: queue full
        ...                                 # point a midjourney provider at fake.url

Endpoints
---------
``POST /mj/submit/{imagine,change,simple-change,action,modal,describe,blend,shorten}`` ->
``{code, description, result, properties}``; ``GET /mj/task/{id}/fetch``; ``POST
/mj/task/list-by-condition {"ids": [...]}``; ``GET /mj/task/list`` (the health probe).
With a ``secret`` every request must carry ``mj-api-secret: <secret>`` (else 401), but
``GET /images/<name>.png`` (a small PNG, every task's image). A button whose customId
holds ``CustomZoom`` or ``Inpaint`` answers code 21 and leaves its task in MODAL until a
``/submit/modal`` for it. ``push(id)`` advances a task and POSTs it to the notifyHook its
submit carried; ``stall_lists_after = n`` hangs every list-by-condition after the first n
until ``release`` is set; ``POST /hooks/*`` records a call (``hook_calls``) and answers the next of
``hook_statuses`` (else 200): a client's hook.

Submit behaviours (queued with ``script``, one per submit; without one the task is
accepted with code 1): ``{"code": 21|22}`` accepted with that code; ``{"code": 23}`` queue
full; ``{"code": 24, "bannedWord": "w"}`` banned prompt; ``{"code": 4}`` any other
refusal; ``{"status": 500}`` an HTTP error; ``{"fail": "reason"}`` accepted, the task
ends in FAILURE; ``{"steps": n}`` how many reads (fetch or list) it takes to finish
(default 2: the first read sees IN_PROGRESS 50%, the second the final state).

Tasks progress only when read, so tests are deterministic: a task is SUBMITTED until its
first read. Finished tasks carry ``imageUrl``/``imageUrls`` and the four U/V buttons plus a
reroll button with proxy-style ``customId``s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import struct
import threading
import time
import zlib
from typing import Any, Self

from aiohttp import web

from tests.fakes.upstream import _bind, _start_runner, _url

JSON = dict[str, Any]


def png(width: int = 4, height: int = 4, rgb: tuple[int, int, int] = (200, 60, 40)) -> bytes:
    """A small valid PNG: what the fake serves as every task's image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def _buttons(task_id: str) -> list[JSON]:
    buttons = []
    for kind, letter in (("upsample", "U"), ("variation", "V")):
        for index in range(1, 5):
            buttons.append(
                {
                    "customId": f"MJ::JOB::{kind}::{index}::{task_id}",
                    "label": f"{letter}{index}",
                    "emoji": "",
                    "style": 2,
                    "type": 2,
                }
            )
    buttons.append(
        {
            "customId": f"MJ::JOB::reroll::0::{task_id}::SOLO",
            "label": "",
            "emoji": "🔄",
            "style": 2,
            "type": 2,
        }
    )
    return buttons


class FakeMidjourney:
    def __init__(self, secret: str | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.secret = secret
        self.host = host
        self.port = port
        self.lock = threading.Lock()
        self.behaviours: list[JSON] = []
        self.requests: list[JSON] = []
        self.tasks: dict[str, JSON] = {}
        self.hook_calls: list[JSON] = []  # what was POSTed to /hooks/* (a client's notifyHook)
        self.hook_statuses: list[int] = []  # answers of the next hook calls (default 200)
        # list-by-condition calls past this many hang until ``release`` is set (a poller
        # caught mid-poll); None: never
        self.stall_lists_after: int | None = None
        self.release = threading.Event()
        self.lists = 0
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- control ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return _url(self.host, self.port)

    def script(self, *behaviours: JSON) -> None:
        with self.lock:
            self.behaviours.extend(behaviours)

    def reset(self) -> None:
        with self.lock:
            self.behaviours.clear()
            self.requests.clear()
            self.tasks.clear()
            self.hook_calls.clear()
            self.hook_statuses.clear()
            self.stall_lists_after = None
            self.release.clear()
            self.lists = 0

    def push(self, task_id: str) -> int | None:
        """Advance the task one step, as a read would, and POST it to the notifyHook its
        submit gave (what midjourney-proxy does on each change); the hook's HTTP status."""
        import httpx

        with self.lock:
            task = self.tasks[task_id]
            self._advance(task)
            hook, payload = task["_hook"], self._public(task)
        if not hook:
            return None
        return httpx.post(hook, json=payload, timeout=10).status_code

    def submits(self) -> list[JSON]:
        return [r for r in self.requests if r["path"].startswith("/mj/submit/")]

    # --- the API ------------------------------------------------------------------------

    def _public(self, task: JSON) -> JSON:
        return {k: v for k, v in task.items() if not k.startswith("_")}

    def _advance(self, task: JSON) -> None:
        if task["status"] in ("SUCCESS", "FAILURE", "MODAL"):
            return
        task["_reads"] += 1
        now = int(time.time() * 1000)
        if task["_reads"] < task["_steps"]:
            task.update(
                status="IN_PROGRESS", progress=f"{100 * task['_reads'] // task['_steps']}%", startTime=now
            )
            return
        task["finishTime"] = now
        task["startTime"] = task["startTime"] or now
        if task["_fail"]:
            task.update(status="FAILURE", progress="0%", failReason=task["_fail"])
            return
        if task["action"] in ("DESCRIBE", "SHORTEN"):  # text answers: prompts, no image grid
            prompts = "\n\n".join(f"{i}️⃣ prompt {i} for {task['id']}" for i in range(1, 5))
            task.update(
                status="SUCCESS", progress="100%", promptEn=prompts, properties={"finalPrompt": prompts}
            )
            if task["action"] == "DESCRIBE":
                task["imageUrl"] = f"{self.url}/images/{task['id']}.png"
            return
        url = f"{self.url}/images/{task['id']}.png"
        task.update(
            status="SUCCESS",
            progress="100%",
            imageUrl=url,
            imageUrls=[{"url": f"{self.url}/images/{task['id']}-{i}.png"} for i in range(1, 5)],
            buttons=_buttons(task["id"])
            if task["action"] in ("IMAGINE", "VARIATION", "REROLL", "BLEND")
            else [],
        )

    async def _handle(self, request: web.Request) -> web.Response:
        body: Any = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                body = None
        with self.lock:
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "headers": dict(request.headers),
                    "json": body,
                }
            )
        if request.path.startswith("/hooks/") and request.method == "POST":
            with self.lock:
                self.hook_calls.append({"path": request.path, "json": body, "at": time.monotonic()})
                status = self.hook_statuses.pop(0) if self.hook_statuses else 200
            return web.json_response({"ok": status < 300}, status=status)
        if request.path.startswith("/images/") and request.path.endswith(".png"):
            return web.Response(body=png(), content_type="image/png")  # images need no secret
        if self.secret is not None and request.headers.get("mj-api-secret") != self.secret:
            return web.json_response({"code": 401, "description": "bad mj-api-secret"}, status=401)
        path = request.path
        if path.startswith("/mj/submit/") and request.method == "POST":
            return self._submit(path.rsplit("/", 1)[-1], body if isinstance(body, dict) else {})
        if path == "/mj/task/list-by-condition" and request.method == "POST":
            with self.lock:
                self.lists += 1
                stall = self.stall_lists_after is not None and self.lists > self.stall_lists_after
            while stall and not self.release.is_set():
                await asyncio.sleep(0.05)
            ids = (body or {}).get("ids") or []
            out = []
            with self.lock:
                for task_id in ids:
                    task = self.tasks.get(task_id)
                    if task is not None:
                        self._advance(task)
                        out.append(self._public(task))
            return web.json_response(out)
        if path == "/mj/task/list":
            with self.lock:
                return web.json_response([self._public(t) for t in self.tasks.values()])
        if path.startswith("/mj/task/") and path.endswith("/fetch"):
            task_id = path[len("/mj/task/") : -len("/fetch")]
            with self.lock:
                task = self.tasks.get(task_id)
                if task is None:
                    return web.json_response(None)
                self._advance(task)
                return web.json_response(self._public(task))
        return web.json_response({"code": 404, "description": "not found"}, status=404)

    def _submit(self, kind: str, body: JSON) -> web.Response:
        with self.lock:
            behaviour = self.behaviours.pop(0) if self.behaviours else {}
            if "status" in behaviour:
                return web.json_response({"error": "fake failure"}, status=behaviour["status"])
            code = behaviour.get("code", 1)
            if code == 24:
                word = behaviour.get("bannedWord", "banned")
                return web.json_response(
                    {
                        "code": 24,
                        "description": "可能包含敏感词",
                        "result": None,
                        "properties": {"bannedWord": word},
                    }
                )
            if code not in (1, 21, 22):
                text = {23: "队列已满，请稍后尝试", 3: "无可用的账号实例"}.get(code, "refused")
                return web.json_response(
                    {"code": code, "description": text, "result": None, "properties": {}}
                )
            action = {
                "imagine": "IMAGINE",
                "describe": "DESCRIBE",
                "blend": "BLEND",
                "shorten": "SHORTEN",
            }.get(kind, "")
            parent = body.get("taskId")
            modal = False
            if kind == "modal":
                parent_task = self.tasks.get(parent) or {}
                action = parent_task.get("action", "")
                if parent_task.get("status") == "MODAL":  # the action that asked for input goes on
                    parent_task.update(status="SUBMITTED", _steps=parent_task["_reads"] + 2)
            elif kind == "change":
                action = body.get("action", "")
            elif kind == "simple-change":
                parent, _, rest = str(body.get("content", "")).partition(" ")
                action = {"U": "UPSCALE", "V": "VARIATION", "R": "REROLL"}.get(rest[:1].upper(), "")
            elif kind == "action":
                custom = str(body.get("customId", ""))
                action = next(
                    (
                        a
                        for w, a in (
                            ("upsample", "UPSCALE"),
                            ("variation", "VARIATION"),
                            ("reroll", "REROLL"),
                            ("customzoom", "ZOOM"),
                            ("outpaint", "ZOOM"),
                            ("pan_", "PAN"),
                            ("inpaint", "INPAINT"),
                        )
                        if w in custom
                    ),
                    "ACTION",
                )
                # a custom zoom or vary region waits for /submit/modal (code 21, status MODAL)
                modal = any(w in custom.lower() for w in ("customzoom", "inpaint"))
            if parent is not None and parent not in self.tasks:
                return web.json_response(
                    {"code": 3, "description": "关联任务不存在", "result": None, "properties": {}}
                )
            if modal:
                code = 21
            task_id = f"{int(time.time() * 1000)}{next(self._ids):04d}"
            self.tasks[task_id] = {
                "id": task_id,
                "action": action,
                "status": "MODAL" if modal else "SUBMITTED",
                "progress": "0%",
                "prompt": body.get("prompt") or (self.tasks[parent]["prompt"] if parent else ""),
                "promptEn": body.get("prompt") or "",
                "description": f"/{kind}",
                "state": body.get("state") or "",
                "submitTime": int(time.time() * 1000),
                "startTime": None,
                "finishTime": None,
                "imageUrl": None,
                "imageUrls": [],
                "failReason": None,
                "properties": {},
                "buttons": [],
                "_reads": 0,
                "_steps": int(behaviour.get("steps", 2)),
                "_fail": behaviour.get("fail"),
                "_parent": parent,
                "_hook": body.get("notifyHook") or "",
            }
            description = {1: "提交成功", 21: "窗口等待"}.get(code, "排队中")
            return web.json_response(
                {"code": code, "description": description, "result": task_id, "properties": {}}
            )

    # --- lifecycle ------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    def start(self) -> Self:
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            runner = loop.run_until_complete(_start_runner(self.build_app(), sock, access_log=False))
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(runner.cleanup())
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-midjourney", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake midjourney-proxy failed to start")
        self._loop = loop
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--secret", default=None)
    args = parser.parse_args()
    fake = FakeMidjourney(args.secret, host=args.host, port=args.port).start()
    print(f"fake midjourney-proxy on {fake.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
