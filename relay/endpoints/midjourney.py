"""/mj/*: the midjourney-proxy API (submit imagine, change, simple-change, action; fetch a
task; list tasks by id), also under /mj-fast/mj/, /mj-relax/mj/ and /mj-turbo/mj/ (the
mode is recorded on the task).

A submit is routed like any request: the action's priced model (``mj_imagine``,
``mj_upscale``...) gives the candidate midjourney providers; limits and the balance are
checked in one counter-store step (the reservation is the action's price); codes 1, 21
and 22 are accepted (the client is told 1), 23 (queue full) moves on to the next
provider, 24 (banned prompt) is passed back with its ``bannedWord``. Follow-ups
(change, simple-change, action, modal) go to the provider that made the parent task.
Clients see the gateway's own task ids, and only their own tasks.

The task's price is charged when the upstream accepts it: the submit's one usage event
carries it (one usage log, one ledger row, settled against the reservation like any
request); a task that fails, is cancelled or times out is refunded once
(``jobs.services``), a second ledger row. A refused submit costs nothing. A fetch of an
unfinished task whose data is older than ``MJ_POLL_INTERVAL`` seconds reads the upstream
first.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
import time

import orjson
from django.conf import settings

from billing.pricing import token_cost
from jobs import hooks, images, selectors, services
from jobs.models import MidjourneyTask
from jobs.wire import task_json
from providers.base import Capability
from providers.midjourney import parse_task
from providers.registry import get_adapter

from ..config import CONFIG, Route
from ..db import db_async
from ..errors import RelayError
from ..forward import UsageRecord, _auto_disable, candidates, in_background, target_for
from ..http import Context
from ..limits import build_plan, refusal_error
from ..openapi import ref
from ..pipeline import usage_event
from ..protocols.midjourney import BANNED_PROMPT, MIDJOURNEY, NOT_FOUND, QUEUE_REJECTED, SUCCESS, answer
from . import Doc, Endpoint
from .common import parse_json, resolve

logger = logging.getLogger("relay")

MODES = {"/mj/": "", "/mj-fast/mj/": "fast", "/mj-relax/mj/": "relax", "/mj-turbo/mj/": "turbo"}
CHANGE_ACTIONS = {"UPSCALE": "mj_upscale", "VARIATION": "mj_variation", "REROLL": "mj_reroll"}
SIMPLE = re.compile(r"^\s*(\S+)\s+([UV])([1-4])\s*$|^\s*(\S+)\s+(R)\s*$", re.IGNORECASE)
# customId (MJ::JOB::upsample::1::hash) -> (action, priced model); the first word found
# decides, so the longer words come first
CUSTOM_ACTIONS = (
    ("upsample", "UPSCALE", "mj_upscale"),
    ("variation", "VARIATION", "mj_variation"),  # also high_variation, low_variation
    ("reroll", "REROLL", "mj_reroll"),
    ("outpaint", "ZOOM", "mj_zoom"),
    ("customzoom", "ZOOM", "mj_zoom"),
    ("zoom", "ZOOM", "mj_zoom"),
    ("pan_", "PAN", "mj_pan"),
    ("inpaint", "INPAINT", "mj_inpaint"),
)
DIMENSIONS = ("PORTRAIT", "SQUARE", "LANDSCAPE")
# code 3 is midjourney-proxy's NOT_FOUND: for a new task it can only mean no account is
# available; for a follow-up it may be the parent, unless the description names the account
ACCOUNT_WORDS = ("account", "账号", "实例")
BASE64_IMAGE = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)


def _mode(ctx: Context) -> tuple[str, str]:
    """(mode, the path after the mode's /mj/ prefix)."""
    for prefix, mode in MODES.items():
        if ctx.path.startswith(prefix):
            return mode, ctx.path[len(prefix) :]
    raise RelayError(404, f"Unknown endpoint {ctx.method} {ctx.path}.")


def _new_task_id() -> str:
    return f"{time.time_ns() // 1_000_000}{secrets.randbelow(1_000_000):06d}"


def _text(body: dict, name: str, *, required: bool = True) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise RelayError(400, f"'{name}' must be a non-empty string.", param=name)
    return value


def _image(value, name: str) -> str:
    """A base64 image as midjourney-proxy takes it: ``data:image/png;base64,...`` (or the
    bare base64); checked to decode, passed on as given."""
    if not isinstance(value, str) or not value.strip():
        raise RelayError(400, f"'{name}' must be a base64 image (data:image/png;base64,...).", param=name)
    data = BASE64_IMAGE.sub("", value.strip(), count=1)
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RelayError(400, f"'{name}' is not valid base64.", param=name) from None
    if not decoded:
        raise RelayError(400, f"'{name}' is empty.", param=name)
    return value


def _images(body: dict, name: str, *, least: int, most: int) -> list[str]:
    value = body.get(name)
    if not isinstance(value, list) or not least <= len(value) <= most:
        raise RelayError(400, f"'{name}' must be an array of {least} to {most} base64 images.", param=name)
    return [_image(item, f"{name}[{index}]") for index, item in enumerate(value)]


def _copy(body: dict, upstream: dict, *names: str) -> dict:
    for name in names:
        if name in body:
            upstream[name] = body[name]
    return upstream


async def _parent(ctx: Context, task_id: str, *, modal: bool = False) -> MidjourneyTask:
    task = await db_async(selectors.midjourney_task_get)(user_id=ctx.key.user_id, task_id=task_id)
    if task is None:
        raise RelayError(404, f"Task '{task_id}' not found.", param="taskId", code="task_not_found")
    allowed = (
        (MidjourneyTask.Status.SUCCESS, MidjourneyTask.Status.MODAL)
        if modal
        else (MidjourneyTask.Status.SUCCESS,)
    )
    if task.status not in allowed:
        what = "succeeded or awaiting a modal" if modal else "succeeded"
        raise RelayError(400, f"Task '{task_id}' has not {what}; it cannot take this action.", param="taskId")
    return task


# --------------------------------------------------------------------------- submit


async def _plan_submit(ctx: Context, kind: str, body: dict):
    """(action, model, prompt, upstream body, parent task) for a submit of ``kind``."""
    if kind == "imagine":
        prompt = _text(body, "prompt")
        if body.get("base64Array") is not None:
            _images(body, "base64Array", least=0, most=5)
        upstream = _copy(body, {}, "prompt", "base64Array", "state")
        return "IMAGINE", "mj_imagine", prompt, upstream, None
    if kind == "describe":
        _image(body.get("base64"), "base64")
        return "DESCRIBE", "mj_describe", "", _copy(body, {}, "base64", "state"), None
    if kind == "blend":
        _images(body, "base64Array", least=2, most=5)
        dimensions = body.get("dimensions", "SQUARE")
        if dimensions not in DIMENSIONS:
            raise RelayError(400, "'dimensions' must be PORTRAIT, SQUARE or LANDSCAPE.", param="dimensions")
        upstream = _copy(body, {"dimensions": dimensions}, "base64Array", "state")
        return "BLEND", "mj_blend", "", upstream, None
    if kind == "shorten":
        prompt = _text(body, "prompt")
        return "SHORTEN", "mj_shorten", prompt, _copy(body, {}, "prompt", "state"), None
    if kind == "modal":
        parent = await _parent(ctx, _text(body, "taskId"), modal=True)
        prompt = _text(body, "prompt", required=False)
        if body.get("maskBase64") is not None:
            _image(body["maskBase64"], "maskBase64")
        upstream = _copy(body, {"taskId": parent.upstream_task_id}, "prompt", "maskBase64", "state")
        return "MODAL", "mj_modal", prompt or parent.prompt, upstream, parent
    if kind == "change":
        action = body.get("action")
        if action not in CHANGE_ACTIONS:
            raise RelayError(400, "'action' must be UPSCALE, VARIATION or REROLL.", param="action")
        index = body.get("index")
        if action != "REROLL" and (
            not isinstance(index, int) or isinstance(index, bool) or not 1 <= index <= 4
        ):
            raise RelayError(400, "'index' must be an integer from 1 to 4.", param="index")
        parent = await _parent(ctx, _text(body, "taskId"))
        upstream = {"taskId": parent.upstream_task_id, "action": action}
        if action != "REROLL":
            upstream["index"] = index
        if "state" in body:
            upstream["state"] = body["state"]
        return action, CHANGE_ACTIONS[action], parent.prompt, upstream, parent
    if kind == "simple-change":
        content = _text(body, "content")
        match = SIMPLE.match(content)
        if match is None:
            raise RelayError(
                400, "'content' must look like '<taskId> U1..U4', '<taskId> V1..V4' or '<taskId> R'."
            )
        task_id = match.group(1) or match.group(4)
        letter = (match.group(2) or match.group(5)).upper()
        action = {"U": "UPSCALE", "V": "VARIATION", "R": "REROLL"}[letter]
        parent = await _parent(ctx, task_id)
        suffix = f"{letter}{match.group(3)}" if match.group(3) else letter
        upstream = {"content": f"{parent.upstream_task_id} {suffix}"}
        if "state" in body:
            upstream["state"] = body["state"]
        return action, CHANGE_ACTIONS[action], parent.prompt, upstream, parent
    # action
    custom_id = _text(body, "customId")
    parent = await _parent(ctx, _text(body, "taskId"))
    action, model = custom_action(custom_id)
    upstream = _copy(body, {"taskId": parent.upstream_task_id, "customId": custom_id}, "state")
    return action, model, parent.prompt, upstream, parent


def custom_action(custom_id: str) -> tuple[str, str]:
    """(action, priced model) of a button's customId; unknown buttons are ``mj_action``."""
    lowered = custom_id.lower()
    return next(((a, m) for word, a, m in CUSTOM_ACTIONS if word in lowered), ("ACTION", "mj_action"))


async def _read(ctx: Context) -> dict:
    """The JSON body; NUL characters refused anywhere in it (PostgreSQL cannot store them,
    and a prompt or a state is stored with the task)."""
    body = parse_json(await ctx.read_body())
    stack: list[tuple[object, str]] = [(body, "")]
    while stack:  # iterative: JSON may nest deeper than Python's recursion limit
        value, name = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise RelayError(
                    400, f"'{name or 'body'}' must not contain NUL characters.", param=name or None
                )
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    raise RelayError(400, "A field name must not contain NUL characters.")
                stack.append((item, key if not name else f"{name}.{key}"))
        elif isinstance(value, list):
            stack.extend((item, name) for item in value)
    return body


def _submit(kind: str):
    async def handle(ctx: Context, relay) -> None:
        mode, _ = _mode(ctx)
        record = UsageRecord(request_type="midjourney", endpoint=ctx.path)
        plan = None
        charge = 0
        try:
            body = await _read(ctx)
            action, model, prompt, upstream, parent = await _plan_submit(ctx, kind, body)
            hook = body.get("notifyHook")
            if hook is not None and hook != "":
                problem = hooks.hook_url_error(hook)
                if problem:
                    raise RelayError(400, problem, param="notifyHook")
            record.model_requested = model
            info, routes = await resolve(ctx, model, Capability.TASKS, what="Midjourney tasks")
            record.price = info.price
            if parent is not None:  # follow-ups only on the provider that made the parent
                routes = [r for r in routes if r.provider_id == parent.provider_id]
                if not routes:
                    raise RelayError(
                        503,
                        f"The provider that made task '{parent.task_id}' no longer serves {model}.",
                        code="no_provider",
                    )
            wanted = build_plan(
                rid=ctx.request_id,
                key=ctx.key,
                body={"max_tokens": 1},
                request_type="midjourney",
                price=info.price,
                model_max=None,
            )
            refusal = await relay.pipeline._reserve(wanted)
            if refusal is not None:
                raise refusal_error(refusal, ctx.key)
            plan = wanted
            price = token_cost(
                info.price, prompt_tokens=0, completion_tokens=0, multiplier=ctx.key.multiplier
            )
            task = await _forward_submit(
                ctx,
                relay,
                record,
                kind=kind,
                upstream=upstream,
                routes=candidates(routes, info.strategy, ctx.request_id),
                task_fields={
                    "action": action,
                    "model": model,
                    "mode": mode,
                    "prompt": prompt,
                    "state": str(body.get("state") or ""),
                    "price": price,
                    "parent_id": parent.pk if parent is not None else None,
                    "notify_hook": hook.strip() if isinstance(hook, str) else "",
                },
            )
            if task is not None:
                charge = task.charged
                await ctx.respond(200, answer(SUCCESS, "Submit success", task.task_id, {}))
        except RelayError as exc:
            record.status_code = exc.status
            record.error = exc.message
            raise
        except Exception as exc:
            record.status_code = 500
            record.error = f"gateway error: {type(exc).__name__}"
            raise
        finally:
            # one usage event per submit: it carries the charge when the upstream accepted
            # the task (refunded by jobs.services if the task fails, is cancelled or times out)
            event = usage_event(ctx, record)
            event.cost = charge
            if plan is None:
                relay.usage.push(event)
            else:
                if plan.quotas:
                    event.quotas = plan.quotas
                store = relay.store
                finish = store.finish if store.remote else store.finish_sync
                finish(plan, tokens=0, cost=charge, event=event)

    return handle


async def _forward_submit(
    ctx: Context, relay, record: UsageRecord, *, kind, upstream, routes, task_fields
) -> MidjourneyTask | None:
    """Submit on the first provider that takes the task; the task created, or None when
    the client was told a refusal (banned prompt, every queue full, another code)."""
    queue_full = None
    last_error = ""
    for route in routes:
        adapter = get_adapter(route.provider_type)
        body = upstream
        if settings.MJ_NOTIFY_BASE_URL:  # the upstream tells the gateway of each change at once
            body = {**upstream, "notifyHook": hooks.notify_url(route.provider_id)}
        request = adapter.task_submit_request(kind, body, target_for(route))
        started = time.monotonic()
        status, payload = await relay.forwarder.fetch(request, timeout=route.timeout)
        tried = {"provider": route.provider_id, "name": route.provider_name, "status": status or 502}
        tried["ms"] = int((time.monotonic() - started) * 1000)
        record.providers_tried.append(tried)
        if status is None:
            last_error = tried["error"] = "the provider could not be reached"
            continue
        if status >= 400:
            error = adapter.classify_error(status, payload)
            tried["error"] = last_error = error.message[:300]
            if error.disable:
                in_background(db_async(_auto_disable)(route.provider_id, error.message))
            if error.retryable or error.disable:
                continue
            raise RelayError(status, error.message, code="upstream_rejected")
        try:
            result = adapter.task_submit_parse(payload)
        except (orjson.JSONDecodeError, ValueError):
            tried["error"] = last_error = "unreadable submit answer"
            continue
        if result.code == QUEUE_REJECTED:
            tried["error"] = last_error = result.description or "queue full"
            queue_full = result
            continue
        if result.code == NOT_FOUND and (
            task_fields["parent_id"] is None or any(w in result.description.lower() for w in ACCOUNT_WORDS)
        ):
            # "no available account": the provider cannot serve anything; like a credential
            # error it is taken out of rotation (the health check brings it back) and the
            # next provider is tried
            tried["error"] = last_error = f"code 3: {result.description or 'no available account'}"[:300]
            in_background(db_async(_auto_disable)(route.provider_id, last_error))
            continue
        record.provider_id = route.provider_id
        record.model_upstream = route.upstream_model
        if result.code == BANNED_PROMPT:
            record.error = f"banned prompt: {result.description}"[:300]
            await ctx.respond(
                200, answer(BANNED_PROMPT, result.description or "Banned prompt", None, result.properties)
            )
            return None
        if not result.accepted:  # the upstream refused the request itself: tell the client as it said
            record.error = f"code {result.code}: {result.description}"[:300]
            await ctx.respond(
                200, answer(result.code, result.description or "Submit failed", None, result.properties)
            )
            return None
        task = await db_async(services.midjourney_task_create)(
            task_id=_new_task_id(),
            upstream_task_id=result.upstream_id,
            user_id=ctx.key.user_id,
            api_key_id=ctx.key.id,
            provider_id=route.provider_id,
            submit_request_id=ctx.request_id,
            **task_fields,
        )
        return task  # the caller answers, once the charge is on record
    if queue_full is not None:
        record.error = "every provider's queue is full"
        await ctx.respond(
            200,
            answer(QUEUE_REJECTED, queue_full.description or "Queue full, please try again later", None, {}),
        )
        return None
    tried = len(record.providers_tried)
    raise RelayError(
        502,
        f"The upstream provider failed ({tried} attempt{'s' if tried != 1 else ''}): {last_error}",
        code="upstream_failed",
    )


# --------------------------------------------------------------------------- tasks


async def _route_of(task: MidjourneyTask) -> Route | None:
    info = await CONFIG.model(task.model)
    if info is None:
        return None
    return next((r for r in info.routes if r.provider_id == task.provider_id), None)


async def _due(task: MidjourneyTask) -> tuple[MidjourneyTask, Route | None]:
    """(the task, failed first when past the timeout; the route to read it from when it
    must be read again: unfinished and older than the poll interval, else None)."""
    if task.final:
        return task, None
    if time.time() - task.submitted_at.timestamp() >= settings.MJ_TASK_TIMEOUT:
        task = await db_async(services.midjourney_task_time_out)(task=task)
    if task.final or not task.upstream_task_id:
        return task, None
    if time.time() - task.refreshed_at.timestamp() < settings.MJ_POLL_INTERVAL:
        return task, None
    return task, await _route_of(task)


async def refresh(relay, task: MidjourneyTask) -> MidjourneyTask:
    """The task, read again from its upstream (its fetch) when due (an unreachable
    upstream leaves it as it is)."""
    task, route = await _due(task)
    if route is None:
        return task
    adapter = get_adapter(route.provider_type)
    request = adapter.task_fetch_request(task.upstream_task_id, target_for(route))
    status, payload = await relay.forwarder.fetch(request, timeout=min(route.timeout, 10))
    if status != 200:
        return task
    try:
        state = adapter.task_parse(payload)
    except (orjson.JSONDecodeError, ValueError):
        return task
    return await db_async(services.midjourney_task_update)(task=task, upstream=state)


async def refresh_many(relay, tasks: list[MidjourneyTask]) -> list[MidjourneyTask]:
    """The tasks, those due read again with one list-by-condition per provider and 100
    ids (not a fetch each); same order."""
    out = []
    by_route: dict[int, tuple[Route, list[int]]] = {}
    for task in tasks:
        task, route = await _due(task)
        if route is not None:
            by_route.setdefault(route.provider_id, (route, []))[1].append(len(out))
        out.append(task)
    for route, positions in by_route.values():
        adapter = get_adapter(route.provider_type)
        for start in range(0, len(positions), 100):
            batch = positions[start : start + 100]
            ids = [out[i].upstream_task_id for i in batch]
            request = adapter.task_list_request(ids, target_for(route))
            status, payload = await relay.forwarder.fetch(request, timeout=min(route.timeout, 10))
            if status != 200:
                continue
            try:
                states = {state.upstream_id: state for state in adapter.task_list_parse(payload)}
            except (orjson.JSONDecodeError, ValueError):
                continue
            for i in batch:
                state = states.get(out[i].upstream_task_id)
                if state is not None:
                    out[i] = await db_async(services.midjourney_task_update)(task=out[i], upstream=state)
    return out


async def fetch_task(ctx: Context, relay) -> None:
    _, rest = _mode(ctx)
    task_id = rest[len("task/") :].removesuffix("/fetch")
    if not rest.endswith("/fetch") or not task_id or "/" in task_id:
        raise RelayError(404, f"Unknown endpoint {ctx.method} {ctx.path}.")
    task = await db_async(selectors.midjourney_task_get)(user_id=ctx.key.user_id, task_id=task_id)
    if task is None:
        raise RelayError(404, f"Task '{task_id}' not found.", code="task_not_found")
    task = await refresh(relay, task)
    await ctx.respond(200, orjson.dumps(task_json(task)))


async def list_by_condition(ctx: Context, relay) -> None:
    body = await _read(ctx)
    ids = body.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 500:
        raise RelayError(400, "'ids' must be an array of at most 500 task ids.", param="ids")
    tasks = await db_async(selectors.midjourney_tasks_by_ids)(user_id=ctx.key.user_id, task_ids=ids)
    tasks = await refresh_many(relay, tasks)
    await ctx.respond(200, orjson.dumps([task_json(task) for task in tasks]))


async def task_image(ctx: Context, relay) -> None:
    """``GET /mj/image/{id}``: the task's image, fetched by the gateway under the outbound
    rules (public addresses only, but the task's own provider, which the operator chose,
    and OUTBOUND_ALLOWED_HOSTS; size and time caps). Only the caller's own tasks; off
    unless ``MJ_IMAGE_PROXY`` is set (``jobs.images``)."""
    _, rest = _mode(ctx)
    task_id = rest[len("image/") :]
    if not settings.MJ_IMAGE_PROXY:
        raise RelayError(
            404, "The image proxy is off on this gateway (MJ_IMAGE_PROXY).", code="image_proxy_off"
        )
    if not task_id or "/" in task_id:
        raise RelayError(404, f"Unknown endpoint {ctx.method} {ctx.path}.")
    task = await db_async(selectors.midjourney_task_get)(user_id=ctx.key.user_id, task_id=task_id)
    if task is None:
        raise RelayError(404, f"Task '{task_id}' not found.", code="task_not_found")
    if not task.image_url:
        raise RelayError(404, f"Task '{task_id}' has no image (yet).", code="no_image")
    base_url = await db_async(selectors.midjourney_provider_base_url)(provider_id=task.provider_id)
    try:
        image = await images.midjourney_image_fetch(
            image_url=task.image_url, provider_base_url=base_url, task_id=task.task_id
        )
    except images.ImageUnavailable as exc:
        raise RelayError(502, exc.message, code=exc.code) from None
    await ctx.respond(
        200,
        image.body,
        content_type=image.content_type.encode(),
        headers=[(b"cache-control", b"private, max-age=86400")],
    )


async def upstream_notify(ctx: Context, relay) -> None:
    """``POST /mj/notify/<provider id>/<token>``: an upstream's task, applied at once to
    the gateway's tasks it made for that provider (never moving one backwards)."""
    provider, _, token = ctx.path[len("/mj/notify/") :].partition("/")
    if not provider.isdigit() or not hooks.notify_token_valid(int(provider), token):
        raise RelayError(401, "Unknown notify URL.", code="invalid_notify_token")
    body = await _read(ctx)
    try:
        state = parse_task(body)
    except (TypeError, ValueError, AttributeError):
        raise RelayError(400, "The notification is not a midjourney-proxy task.") from None
    if not state.upstream_id:
        raise RelayError(400, "The notification has no task id.", param="id")
    tasks = await db_async(selectors.midjourney_tasks_of_upstream)(
        provider_id=int(provider), upstream_task_id=state.upstream_id
    )
    for task in tasks:
        await db_async(services.midjourney_task_update)(task=task, upstream=state)
    await ctx.respond(200, answer(SUCCESS, "Notified", None, {"tasks": len(tasks)}))


# --------------------------------------------------------------------------- table

SUBMITS = {
    "imagine": ("MidjourneyImagine", "Imagine: a new task from a prompt"),
    "change": ("MidjourneyChange", "Upscale, vary or reroll a finished task"),
    "simple-change": ("MidjourneySimpleChange", "A change written as '<taskId> U1'"),
    "action": ("MidjourneyAction", "Press a button (customId) of a finished task"),
    "modal": ("MidjourneyModal", "Complete an action that asked for input (zoom, vary region...)"),
    "describe": ("MidjourneyDescribe", "Describe: prompts for an image"),
    "blend": ("MidjourneyBlend", "Blend: one image from 2 to 5 images"),
    "shorten": ("MidjourneyShorten", "Shorten: a shorter prompt"),
}
MODE_TEXT = (
    " Also served under /mj-fast/mj/, /mj-relax/mj/ and /mj-turbo/mj/ (the mode is recorded on the task)."
)


def _endpoints(prefix: str) -> list[Endpoint]:
    documented = prefix == "/mj/"
    out = []
    for kind, (schema, summary) in SUBMITS.items():
        doc = None
        if documented:
            doc = Doc(
                f"mj_submit_{kind.replace('-', '_')}",
                summary,
                "relay: midjourney",
                "MidjourneySubmit",
                "code 1: submitted (result is the task id); 23: every provider's queue is full; "
                "24: banned prompt (properties.bannedWord); other codes: the upstream refused.",
                request=schema,
                description="Submits a Midjourney task; its price is charged when the upstream accepts it "
                "and refunded if the task fails." + MODE_TEXT,
            )
        out.append(Endpoint(f"{prefix}submit/{kind}", "POST", MIDJOURNEY, handle=_submit(kind), doc=doc))
    out.append(
        Endpoint(
            f"{prefix}task/list-by-condition",
            "POST",
            MIDJOURNEY,
            handle=list_by_condition,
            doc=Doc(
                "mj_task_list_by_condition",
                "The caller's tasks with these ids",
                "relay: midjourney",
                "MidjourneyTaskList",
                "The tasks found (ids of other users' tasks are left out).",
                request="MidjourneyListByCondition",
                description=MODE_TEXT.strip(),
            )
            if documented
            else None,
        )
    )
    out.append(
        Endpoint(
            f"{prefix}task/",
            "GET",
            MIDJOURNEY,
            handle=fetch_task,
            prefix=True,
            doc=Doc(
                "mj_task_fetch",
                "One task",
                "relay: midjourney",
                "MidjourneyTask",
                "The task (read again from the upstream when unfinished and older than the poll interval).",
                parameters=({"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},),
                path="/mj/task/{id}/fetch",
                description=MODE_TEXT.strip(),
            )
            if documented
            else None,
        )
    )
    out.append(
        Endpoint(
            f"{prefix}image/",
            "GET",
            MIDJOURNEY,
            handle=task_image,
            prefix=True,
            doc=Doc(
                "mj_image",
                "One task's image, through the gateway",
                "relay: midjourney",
                "MidjourneyImage",
                "The image bytes (image/png, image/jpeg, image/webp or image/gif).",
                parameters=({"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},),
                path="/mj/image/{id}",
                description="Served only when MJ_IMAGE_PROXY is on (else 404); the caller's own tasks only. "
                + MODE_TEXT.strip(),
            )
            if documented
            else None,
        )
    )
    return out


ENDPOINTS = [endpoint for prefix in MODES for endpoint in _endpoints(prefix)] + [
    Endpoint(
        "/mj/notify/",
        "POST",
        MIDJOURNEY,
        handle=upstream_notify,
        authenticated=False,
        prefix=True,
        doc=Doc(
            "mj_upstream_notify",
            "An upstream midjourney-proxy reports a task (its notifyHook)",
            "relay: midjourney",
            "MidjourneySubmit",
            "code 1; properties.tasks: how many of the gateway's tasks it updated.",
            request="MidjourneyUpstreamTask",
            parameters=(
                {"name": "provider", "in": "path", "required": True, "schema": {"type": "integer"}},
                {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}},
            ),
            path="/mj/notify/{provider}/{token}",
            description="Authenticated by the provider's own token in the path "
            "(manage.py mj_notify_url PROVIDER prints the URL); no API key.",
        ),
    )
]


# --- OpenAPI: the shapes this module answers with ------------------------------------

_STATE = {"type": "string", "description": "Returned as given on the task."}
_HOOK = {
    "type": "string",
    "format": "uri",
    "description": "POSTed the task JSON on each change (http/https, public addresses only "
    "unless listed in OUTBOUND_ALLOWED_HOSTS). Taken by every submit.",
}
SCHEMAS: dict[str, dict] = {
    "MidjourneySubmit": {
        "type": "object",
        "required": ["code", "description", "result", "properties"],
        "properties": {
            "code": {"type": "integer", "example": 1},
            "description": {"type": "string", "example": "Submit success"},
            "result": {"type": "string", "nullable": True, "example": "1733004000000123456"},
            "properties": {"type": "object", "additionalProperties": True},
        },
    },
    "MidjourneyImagine": {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string", "example": "a cat in a hat --v 6"},
            "base64Array": {"type": "array", "items": {"type": "string"}},
            "notifyHook": _HOOK,
            "state": _STATE,
        },
    },
    "MidjourneyChange": {
        "type": "object",
        "required": ["taskId", "action"],
        "properties": {
            "taskId": {"type": "string"},
            "action": {"type": "string", "enum": ["UPSCALE", "VARIATION", "REROLL"]},
            "index": {"type": "integer", "minimum": 1, "maximum": 4},
            "state": _STATE,
        },
    },
    "MidjourneySimpleChange": {
        "type": "object",
        "required": ["content"],
        "properties": {"content": {"type": "string", "example": "1733004000000123456 U2"}, "state": _STATE},
    },
    "MidjourneyAction": {
        "type": "object",
        "required": ["taskId", "customId"],
        "properties": {
            "taskId": {"type": "string"},
            "customId": {"type": "string", "example": "MJ::JOB::upsample::2::4ea9"},
            "state": _STATE,
        },
    },
    "MidjourneyModal": {
        "type": "object",
        "required": ["taskId"],
        "properties": {
            "taskId": {"type": "string"},
            "prompt": {"type": "string"},
            "maskBase64": {"type": "string", "description": "data:image/png;base64,..."},
            "state": _STATE,
        },
    },
    "MidjourneyDescribe": {
        "type": "object",
        "required": ["base64"],
        "properties": {
            "base64": {"type": "string", "example": "data:image/png;base64,iVBORw0..."},
            "state": _STATE,
        },
    },
    "MidjourneyBlend": {
        "type": "object",
        "required": ["base64Array"],
        "properties": {
            "base64Array": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 5},
            "dimensions": {"type": "string", "enum": list(DIMENSIONS), "default": "SQUARE"},
            "state": _STATE,
        },
    },
    "MidjourneyShorten": {
        "type": "object",
        "required": ["prompt"],
        "properties": {"prompt": {"type": "string"}, "state": _STATE},
    },
    "MidjourneyListByCondition": {
        "type": "object",
        "required": ["ids"],
        "properties": {"ids": {"type": "array", "items": {"type": "string"}, "maxItems": 500}},
    },
    "MidjourneyTask": {
        "type": "object",
        "required": ["id", "action", "status", "progress"],
        "properties": {
            "id": {"type": "string"},
            "action": {"type": "string", "example": "IMAGINE"},
            "mode": {"type": "string", "enum": ["", "fast", "relax", "turbo"]},
            "status": {
                "type": "string",
                "enum": ["NOT_START", "SUBMITTED", "MODAL", "IN_PROGRESS", "FAILURE", "SUCCESS", "CANCEL"],
            },
            "progress": {"type": "string", "example": "100%"},
            "prompt": {"type": "string"},
            "promptEn": {"type": "string"},
            "description": {"type": "string"},
            "state": {"type": "string"},
            "submitTime": {"type": "integer", "nullable": True, "description": "ms since the epoch"},
            "startTime": {"type": "integer", "nullable": True},
            "finishTime": {"type": "integer", "nullable": True},
            "imageUrl": {"type": "string"},
            "imageUrls": {
                "type": "array",
                "items": {"type": "object", "properties": {"url": {"type": "string"}}},
            },
            "failReason": {"type": "string"},
            "properties": {"type": "object", "additionalProperties": True},
            "buttons": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "customId": {"type": "string"},
                        "label": {"type": "string"},
                        "emoji": {"type": "string"},
                        "style": {"type": "integer"},
                        "type": {"type": "integer"},
                    },
                },
            },
        },
    },
    "MidjourneyTaskList": {"type": "array", "items": ref("MidjourneyTask")},
    "MidjourneyImage": {"type": "string", "format": "binary"},
    "MidjourneyUpstreamTask": {
        "type": "object",
        "required": ["id", "status"],
        "description": "The upstream's task, as its fetch answers it (its own id).",
        "additionalProperties": True,
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string"},
            "progress": {"type": "string"},
        },
    },
}
