"""A memory probe for the servers bench/stream_memory.py starts (never imported by the project).

bench/stream_memory.py copies this file as ``sitecustomize.py`` into a directory it puts on
the server's ``PYTHONPATH`` together with ``STREAM_MEMORY_DIR``; Python imports it at start.
In a server process (gunicorn or uvicorn on the command line; ``manage.py`` runs are left
alone) and in every process forked from one (gunicorn's workers), it starts a thread that
listens on a loopback port (written to ``$STREAM_MEMORY_DIR/<pid>.port``) for one command a
connection: ``snap NAME``. The thread runs a full collection, writes a tracemalloc snapshot
to ``$STREAM_MEMORY_DIR/<pid>-NAME.snapshot`` when tracing (``STREAM_MEMORY_FRAMES``: frames
kept per allocation, 0 = no tracing; tracing starts at the first probe), and answers one
JSON line: the process's RSS, the traced total and live objects counted by type (functions
and coroutines by name).
"""

from __future__ import annotations

import os

DIRECTORY = os.environ.get("STREAM_MEMORY_DIR", "")


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _snap(name: str) -> dict:
    import gc
    import tracemalloc
    from types import CoroutineType, FunctionType

    gc.collect()
    answer: dict = {"pid": os.getpid(), "rss_kb": _rss_kb()}
    frames = int(os.environ.get("STREAM_MEMORY_FRAMES") or 0)
    if frames and not tracemalloc.is_tracing():
        # from the first probe on: the diffs are of what is allocated after it, and the
        # server starts at full speed (tracing its imports took minutes)
        tracemalloc.start(frames)
    if tracemalloc.is_tracing():
        path = os.path.join(DIRECTORY, f"{os.getpid()}-{name}.snapshot")
        tracemalloc.take_snapshot().dump(path)
        answer["snapshot"] = path
        answer["traced_bytes"] = tracemalloc.get_traced_memory()[0]
    types: dict[str, int] = {}
    for obj in gc.get_objects():
        kind = type(obj)
        label = f"{kind.__module__}.{kind.__qualname__}"
        if kind in (FunctionType, CoroutineType):  # which ones: the code they run
            label += f" {obj.__qualname__}"
        types[label] = types.get(label, 0) + 1
    answer["objects"] = types
    return answer


def _serve() -> None:
    import json
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    path = os.path.join(DIRECTORY, f"{os.getpid()}.port")
    with open(path + ".tmp", "w") as out:
        out.write(str(listener.getsockname()[1]))
    os.replace(path + ".tmp", path)
    while True:
        conn, _ = listener.accept()
        with conn, conn.makefile("rwb") as stream:
            command = stream.readline().decode().split()
            if command[:1] == ["snap"] and len(command) == 2:
                reply = _snap(command[1])
            else:
                reply = {"error": f"unknown command {command!r}"}
            stream.write(json.dumps(reply).encode() + b"\n")
            stream.flush()


def _install() -> None:
    import threading

    threading.Thread(target=_serve, name="stream-memory-probe", daemon=True).start()


def _is_server() -> bool:
    try:
        with open("/proc/self/cmdline", "rb") as cmdline:
            argv = cmdline.read().split(b"\0")
    except OSError:
        return False
    return any(arg.endswith((b"gunicorn", b"uvicorn")) for arg in argv[:3])


if DIRECTORY and _is_server():
    _install()
    os.register_at_fork(after_in_child=_install)
