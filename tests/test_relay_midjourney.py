"""The /mj relay against real loopback midjourney-proxy fakes: submit, progress by fetch,
one charge when the upstream accepts (ledger == balance), one refund on FAILURE, queue-full failover,
banned prompts, follow-ups on the parent's provider, isolation, modes, error shapes."""

from __future__ import annotations

import base64

import httpx
import pytest
from django.conf import settings as django_settings
from django.db.models import Sum

from accounts.models import PriceGroup, User
from billing.models import BillingRecord, DailyUsage, UsageLog
from core.money import to_nanos
from jobs.models import MidjourneyTask
from tests import factories
from tests.fakes.midjourney import FakeMidjourney, png

SECRET = "mj-upstream-secret"
IMAGINE = to_nanos("0.1")
UPSCALE = to_nanos("0.05")
PRICES = {
    "mj_imagine": IMAGINE,
    "mj_upscale": UPSCALE,
    "mj_variation": IMAGINE,
    "mj_describe": to_nanos("0.02"),
    "mj_blend": to_nanos("0.11"),
    "mj_shorten": to_nanos("0.01"),
    "mj_zoom": to_nanos("0.07"),
    "mj_pan": to_nanos("0.06"),
    "mj_modal": to_nanos("0.03"),
}
IMAGE = "data:image/png;base64," + base64.b64encode(png()).decode()


@pytest.fixture(scope="module")
def _mj_a():
    with FakeMidjourney(secret=SECRET) as fake:
        yield fake


@pytest.fixture(scope="module")
def _mj_b():
    with FakeMidjourney(secret=SECRET) as fake:
        yield fake


@pytest.fixture
def mj(_mj_a, settings):
    settings.MJ_POLL_INTERVAL = 0  # every fetch of an unfinished task reads the upstream
    _mj_a.reset()
    yield _mj_a
    _mj_a.reset()


@pytest.fixture
def mj_b(_mj_b):
    _mj_b.reset()
    yield _mj_b
    _mj_b.reset()


def _price(slug: str, amount: int) -> None:
    model = factories.ModelFactory(slug=slug)
    if not model.prices.exists():
        factories.PriceFactory(
            model=model, input_per_1m=0, output_per_1m=0, cached_input_per_1m=0, per_request=amount
        )


def _provider(world, fake, *, priority=0):
    from providers.models import ProviderModel

    provider = world.provider(fake.url, type="midjourney", api_key=SECRET, priority=priority)
    for slug, amount in PRICES.items():
        _price(slug, amount)
        ProviderModel.objects.create(provider=provider, model=factories.ModelFactory(slug=slug))
    return provider


def _client(gateway, key, header="bearer"):
    headers = {
        "bearer": {"Authorization": f"Bearer {key}"},
        "x-api-key": {"x-api-key": key},
        "mj-api-secret": {"mj-api-secret": key},
    }[header]
    return httpx.Client(base_url=gateway.url, headers=headers, timeout=10)


def _user(world, name="alice", balance="10"):
    return world.user(name, balance=to_nanos(balance))


def _ledger_matches(user, start: int) -> int:
    user.refresh_from_db()
    total = BillingRecord.objects.filter(user=user).aggregate(s=Sum("amount"))["s"] or 0
    assert user.balance - start == total
    return start - user.balance


def _until_final(client, task_id, prefix="/mj", reads=10):
    for _ in range(reads):
        task = client.get(f"{prefix}/task/{task_id}/fetch").json()
        if task["status"] in ("SUCCESS", "FAILURE", "CANCEL"):
            return task
    raise AssertionError(f"task {task_id} did not finish: {task}")


def test_imagine_progress_success_charged_once_then_upscale_on_same_provider(world, mj, mj_b):
    _provider(world, mj, priority=10)
    _provider(world, mj_b, priority=0)
    user = _user(world)
    start = user.balance
    with _client(world_gateway(world), world.key(user)) as client:
        submitted = client.post("/mj/submit/imagine", json={"prompt": "a cat", "state": "s1"}).json()
        assert submitted["code"] == 1 and submitted["result"]
        task_id = submitted["result"]
        first = client.get(f"/mj/task/{task_id}/fetch").json()
        assert first["status"] == "IN_PROGRESS" and first["progress"] == "50%" and first["state"] == "s1"
        done = _until_final(client, task_id)
        assert done["status"] == "SUCCESS" and done["progress"] == "100%"
        assert done["imageUrl"] and len(done["imageUrls"]) == 4 and done["buttons"]
        assert done["id"] == task_id and done["action"] == "IMAGINE" and done["prompt"] == "a cat"
        for _ in range(3):  # fetching again charges nothing more
            client.get(f"/mj/task/{task_id}/fetch")
        upscale_button = next(b for b in done["buttons"] if b["label"] == "U2")
        follow = client.post(
            "/mj/submit/action", json={"taskId": task_id, "customId": upscale_button["customId"]}
        )
        assert follow.json()["code"] == 1
        upscaled = _until_final(client, follow.json()["result"])
        assert upscaled["status"] == "SUCCESS" and upscaled["action"] == "UPSCALE"
    assert len(mj.submits()) == 2 and not mj_b.submits()  # the follow-up went to the parent's provider
    assert mj.submits()[0]["headers"]["mj-api-secret"] == SECRET
    assert mj.submits()[1]["json"]["taskId"] == MidjourneyTask.objects.get(task_id=task_id).upstream_task_id
    _eventually(lambda: BillingRecord.objects.filter(user=user).count() == 2)
    assert _ledger_matches(user, start) == IMAGINE + UPSCALE
    assert sorted(BillingRecord.objects.filter(user=user).values_list("kind", "amount")) == sorted(
        [("usage", -IMAGINE), ("usage", -UPSCALE)]
    )
    task = MidjourneyTask.objects.get(task_id=task_id)
    assert task.charged == IMAGINE and task.refunded == 0 and task.provider.base_url == mj.url
    # one usage log per client request (the submit carries the charge), none for the fetches
    logs = UsageLog.objects.filter(user=user)
    assert sorted(logs.values_list("cost", flat=True)) == [UPSCALE, IMAGINE]
    assert set(logs.values_list("request_type", flat=True)) == {"midjourney"}
    assert DailyUsage.objects.filter(user=user).aggregate(n=Sum("requests"))["n"] == 2


def _eventually(check, timeout=5.0):
    import time

    from tests.conftest import settle_usage

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        settle_usage()
        time.sleep(0.05)


def world_gateway(world):
    from gateway_project.asgi import relay_app  # noqa: F401  (the server is the session's)

    return _GATEWAY["server"]


_GATEWAY: dict = {}


@pytest.fixture(autouse=True)
def _remember_gateway(gateway):
    _GATEWAY["server"] = gateway
    yield


def test_failure_refunded(world, mj):
    _provider(world, mj)
    user = _user(world)
    start = user.balance
    mj.script({"fail": "Banned by moderation"})
    with _client(world_gateway(world), world.key(user)) as client:
        task_id = client.post("/mj/submit/imagine", json={"prompt": "x"}).json()["result"]
        done = _until_final(client, task_id)
        for _ in range(3):  # reading it again refunds nothing more
            client.get(f"/mj/task/{task_id}/fetch")
    assert done["status"] == "FAILURE" and done["failReason"] == "Banned by moderation"
    _eventually(lambda: BillingRecord.objects.filter(user=user).count() == 2)
    assert _ledger_matches(user, start) == 0
    assert sorted(BillingRecord.objects.filter(user=user).values_list("kind", "amount")) == [
        ("refund", IMAGINE),
        ("usage", -IMAGINE),
    ]
    assert BillingRecord.objects.get(user=user, kind="refund").request_id == f"mj-refund-{task_id}"
    assert UsageLog.objects.filter(user=user).count() == 1
    task = MidjourneyTask.objects.get(task_id=task_id)
    assert task.charged == task.refunded == IMAGINE


def test_failure_by_concurrent_updates_refunds_once(world, mj):
    """A failure that arrives by several paths at once (poll, notify, fetch) refunds once."""
    import threading

    from django.db import connection

    from jobs import services
    from providers.midjourney import TaskState

    _provider(world, mj)
    user = _user(world)
    start = user.balance
    with _client(world_gateway(world), world.key(user)) as client:
        task_id = client.post("/mj/submit/imagine", json={"prompt": "x"}).json()["result"]
    _eventually(lambda: BillingRecord.objects.filter(user=user).count() == 1)
    barrier = threading.Barrier(6)
    errors = []

    def finish() -> None:
        try:
            task = MidjourneyTask.objects.get(task_id=task_id)
            barrier.wait(5)
            state = TaskState(task.upstream_task_id, status="FAILURE", progress=0, fail_reason="x")
            services.midjourney_task_update(task=task, upstream=state)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=finish) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not errors
    assert BillingRecord.objects.filter(user=user, kind="refund").count() == 1
    assert _ledger_matches(user, start) == 0


def test_concurrent_imagines_stop_at_the_balance(world, mj):
    """50 imagines at once against a balance that covers 20: exactly 20 accepted, each
    charged once, the rest refused before the upstream."""
    import asyncio

    _provider(world, mj)
    user = world.user("dora", balance=IMAGINE * 20)
    key = world.key(user)
    gateway = world_gateway(world)

    async def run():
        async with httpx.AsyncClient(
            base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            return await asyncio.gather(
                *(client.post("/mj/submit/imagine", json={"prompt": f"p{i}"}) for i in range(50))
            )

    answers = asyncio.run(run())
    accepted = [a for a in answers if a.status_code == 200 and a.json()["code"] == 1]
    refused = [a for a in answers if a.status_code == 402]
    assert len(accepted) == 20 and len(refused) == 30, [a.status_code for a in answers]
    assert len(mj.submits()) == 20
    _eventually(lambda: BillingRecord.objects.filter(user=user).count() == 20)
    assert _ledger_matches(user, IMAGINE * 20) == IMAGINE * 20
    assert User.objects.get(pk=user.pk).balance == 0
    assert MidjourneyTask.objects.filter(user=user, charged=IMAGINE).count() == 20


def test_queue_full_fails_over_and_codes_21_22_answer_1(world, mj, mj_b):
    _provider(world, mj, priority=10)
    _provider(world, mj_b, priority=0)
    user = _user(world)
    mj.script({"code": 23}, {"code": 22})
    with _client(world_gateway(world), world.key(user), header="x-api-key") as client:
        first = client.post("/mj/submit/imagine", json={"prompt": "a"}).json()
        assert first["code"] == 1
        second = client.post("/mj/submit/imagine", json={"prompt": "b"}).json()
        assert second["code"] == 1
    assert len(mj_b.submits()) == 1  # the first went on to b after a's queue was full
    assert MidjourneyTask.objects.get(task_id=first["result"]).provider.base_url == mj_b.url
    assert MidjourneyTask.objects.get(task_id=second["result"]).provider.base_url == mj.url


def test_queue_full_everywhere_is_code_23(world, mj):
    _provider(world, mj)
    mj.script({"code": 23}, {"code": 23}, {"code": 23})
    with _client(world_gateway(world), world.key(_user(world))) as client:
        answer = client.post("/mj/submit/imagine", json={"prompt": "a"})
    assert answer.status_code == 200 and answer.json()["code"] == 23 and answer.json()["result"] is None
    assert not MidjourneyTask.objects.exists()


def test_banned_word_passed_back_and_nothing_charged(world, mj):
    _provider(world, mj)
    user = _user(world)
    start = user.balance
    mj.script({"code": 24, "bannedWord": "gore"})
    with _client(world_gateway(world), world.key(user), header="mj-api-secret") as client:
        answer = client.post("/mj/submit/imagine", json={"prompt": "gore"}).json()
    assert answer["code"] == 24 and answer["properties"]["bannedWord"] == "gore" and answer["result"] is None
    assert not MidjourneyTask.objects.exists()
    assert _ledger_matches(user, start) == 0


def test_change_and_simple_change_follow_the_parent(world, mj, mj_b):
    _provider(world, mj, priority=0)
    user = _user(world)
    with _client(world_gateway(world), world.key(user)) as client:
        task_id = client.post("/mj/submit/imagine", json={"prompt": "a"}).json()["result"]
        _until_final(client, task_id)
        _provider(world, mj_b, priority=10)  # a better provider now: follow-ups still go to a
        change = client.post("/mj/submit/change", json={"taskId": task_id, "action": "VARIATION", "index": 3})
        assert change.json()["code"] == 1
        simple = client.post("/mj/submit/simple-change", json={"content": f"{task_id} U1"})
        assert simple.json()["code"] == 1
        assert _until_final(client, simple.json()["result"])["action"] == "UPSCALE"
    upstream_id = MidjourneyTask.objects.get(task_id=task_id).upstream_task_id
    assert [s["path"] for s in mj.submits()] == [
        "/mj/submit/imagine",
        "/mj/submit/change",
        "/mj/submit/simple-change",
    ]
    assert mj.submits()[1]["json"] == {"taskId": upstream_id, "action": "VARIATION", "index": 3}
    assert mj.submits()[2]["json"] == {"content": f"{upstream_id} U1"}
    assert not mj_b.submits()


def test_other_users_tasks_are_not_found(world, mj):
    _provider(world, mj)
    alice, bob = _user(world, "alice"), _user(world, "bob")
    gateway = world_gateway(world)
    with _client(gateway, world.key(alice)) as a, _client(gateway, world.key(bob)) as b:
        task_id = a.post("/mj/submit/imagine", json={"prompt": "a"}).json()["result"]
        mine = a.post("/mj/task/list-by-condition", json={"ids": [task_id, "nope"]}).json()
        assert [t["id"] for t in mine] == [task_id]
        assert b.post("/mj/task/list-by-condition", json={"ids": [task_id]}).json() == []
        missing = b.get(f"/mj/task/{task_id}/fetch")
        assert missing.status_code == 404 and missing.json()["code"] == 3 and missing.json()["result"] is None
        follow = b.post("/mj/submit/change", json={"taskId": task_id, "action": "UPSCALE", "index": 1})
        assert follow.status_code == 404 and follow.json()["code"] == 3


@pytest.mark.parametrize(
    "prefix,mode", [("/mj-fast/mj", "fast"), ("/mj-relax/mj", "relax"), ("/mj-turbo/mj", "turbo")]
)
def test_mode_prefixes(world, mj, prefix, mode):
    _provider(world, mj)
    with _client(world_gateway(world), world.key(_user(world))) as client:
        task_id = client.post(f"{prefix}/submit/imagine", json={"prompt": "a"}).json()["result"]
        task = _until_final(client, task_id, prefix=prefix)
        assert task["mode"] == mode
        assert (
            client.post(f"{prefix}/task/list-by-condition", json={"ids": [task_id]}).json()[0]["mode"] == mode
        )
    assert MidjourneyTask.objects.get(task_id=task_id).mode == mode


def test_group_multiplier_applies(world, mj):
    _provider(world, mj)
    group = PriceGroup.objects.create(name="vip", multiplier="1.5")
    user = world.user("carol", balance=to_nanos("10"), group=group)
    start = user.balance
    with _client(world_gateway(world), world.key(user)) as client:
        task_id = client.post("/mj/submit/imagine", json={"prompt": "a"}).json()["result"]
        assert _until_final(client, task_id)["status"] == "SUCCESS"
    _eventually(lambda: BillingRecord.objects.filter(user=user).exists())
    assert _ledger_matches(user, start) == IMAGINE * 3 // 2


def test_errors_in_midjourney_shape(world, mj):
    _provider(world, mj)
    user = _user(world)
    gateway = world_gateway(world)
    with _client(gateway, world.key(user)) as client:
        cases = [
            (client.post("/mj/submit/imagine", json={}), 400, 4),
            (client.post("/mj/submit/imagine", content=b"{oops"), 400, 4),
            (client.post("/mj/submit/change", json={"taskId": "x", "action": "SHRINK"}), 400, 4),
            (client.post("/mj/submit/simple-change", json={"content": "garbage"}), 400, 4),
            (client.get("/mj/task/unknown/fetch"), 404, 3),
            (
                client.post(
                    "/mj/submit/action", json={"taskId": "unknown", "customId": "MJ::JOB::upsample::1"}
                ),
                404,
                3,
            ),
            (client.post("/mj/task/list-by-condition", json={"ids": "x"}), 400, 4),
            # PostgreSQL stores no NUL: refused up front (the fuzz test found a 500)
            (client.post("/mj/submit/imagine", json={"prompt": "a\x00b"}), 400, 4),
            (client.post("/mj/submit/imagine", json={"prompt": "a", "state": ["\x00"]}), 400, 4),
            (client.get("/mj/submit/imagine"), 405, 9),
        ]
    with httpx.Client(base_url=gateway.url, timeout=10) as anonymous:
        cases.append((anonymous.post("/mj/submit/imagine", json={"prompt": "a"}), 401, 9))
        cases.append(
            (
                anonymous.post("/mj/submit/imagine", json={"prompt": "a"}, headers={"mj-api-secret": "bad"}),
                401,
                9,
            )
        )
    for response, status, code in cases:
        body = response.json()
        assert response.status_code == status, (response.request.url, body)
        assert body["code"] == code and body["result"] is None and isinstance(body["description"], str)
        assert isinstance(body["properties"], dict)
    assert not mj.submits()


def test_balance_too_low_is_refused_before_the_upstream(world, mj):
    _provider(world, mj)
    user = _user(world, balance="0")
    with _client(world_gateway(world), world.key(user)) as client:
        answer = client.post("/mj/submit/imagine", json={"prompt": "a"})
    assert answer.status_code == 402 and answer.json()["code"] == 9
    assert not mj.submits()
    assert User.objects.get(pk=user.pk).balance == 0


def test_poller_finishes_tasks_and_charges_once(world, mj):
    from jobs.polling import midjourney_tasks_poll

    _provider(world, mj)
    user = _user(world)
    start = user.balance
    with _client(world_gateway(world), world.key(user)) as client:
        ok = client.post("/mj/submit/imagine", json={"prompt": "a"}).json()["result"]
        mj.script({"fail": "upstream error"})
        bad = client.post("/mj/submit/imagine", json={"prompt": "b"}).json()["result"]
        assert midjourney_tasks_poll() == 2  # IN_PROGRESS
        assert midjourney_tasks_poll() == 2  # SUCCESS and FAILURE
        assert midjourney_tasks_poll() == 0  # nothing unfinished is left
        listed = {
            t["id"]: t for t in client.post("/mj/task/list-by-condition", json={"ids": [ok, bad]}).json()
        }
    assert listed[ok]["status"] == "SUCCESS" and listed[bad]["status"] == "FAILURE"
    assert [r["path"] for r in mj.requests].count("/mj/task/list-by-condition") == 2
    assert not [r for r in mj.requests if r["path"].endswith("/fetch")]
    _eventually(lambda: BillingRecord.objects.filter(user=user).count() == 3)
    assert _ledger_matches(user, start) == IMAGINE  # two charges, one refund


@pytest.mark.skipif(bool(django_settings.REDIS_URL), reason="the embedded default (no Redis, no Celery beat)")
def test_embedded_default_polls_in_process(world, mj, settings):
    import time

    schedule = {name: dict(entry) for name, entry in settings.CELERY_BEAT_SCHEDULE.items()}
    schedule["poll-midjourney"]["schedule"] = 0.5
    settings.CELERY_BEAT_SCHEDULE = schedule
    _provider(world, mj)
    user = _user(world)
    with _client(world_gateway(world), world.key(user)) as client:
        task_id = client.post("/mj/submit/imagine", json={"prompt": "a"}).json()["result"]
    deadline = time.monotonic() + 15
    while MidjourneyTask.objects.get(task_id=task_id).status != "SUCCESS":
        assert time.monotonic() < deadline, "the in-process poller did not finish the task"
        time.sleep(0.1)
    assert not [r for r in mj.requests if r["path"].endswith("/fetch")]
    assert MidjourneyTask.objects.get(task_id=task_id).charged == IMAGINE


def test_describe_blend_shorten_are_priced_per_action(world, mj):
    _provider(world, mj)
    user = _user(world)
    start = user.balance
    with _client(world_gateway(world), world.key(user)) as client:
        describe = client.post("/mj/submit/describe", json={"base64": IMAGE, "state": "d"}).json()
        blend = client.post(
            "/mj/submit/blend", json={"base64Array": [IMAGE, IMAGE], "dimensions": "LANDSCAPE"}
        )
        shorten = client.post("/mj/submit/shorten", json={"prompt": "a very long prompt --ar 16:9"}).json()
        assert describe["code"] == blend.json()["code"] == shorten["code"] == 1
        described = _until_final(client, describe["result"])
        blended = _until_final(client, blend.json()["result"])
        shortened = _until_final(client, shorten["result"])
    assert (
        described["action"] == "DESCRIBE"
        and "prompt 1" in described["promptEn"]
        and described["state"] == "d"
    )
    assert blended["action"] == "BLEND" and blended["status"] == "SUCCESS" and len(blended["imageUrls"]) == 4
    assert shortened["action"] == "SHORTEN" and shortened["prompt"] == "a very long prompt --ar 16:9"
    sent = {r["path"]: r["json"] for r in mj.submits()}
    assert sent["/mj/submit/describe"] == {"base64": IMAGE, "state": "d"}
    assert sent["/mj/submit/blend"] == {"base64Array": [IMAGE, IMAGE], "dimensions": "LANDSCAPE"}
    assert sent["/mj/submit/shorten"] == {"prompt": "a very long prompt --ar 16:9"}
    _eventually(lambda: BillingRecord.objects.filter(user=user).count() == 3)
    assert _ledger_matches(user, start) == PRICES["mj_describe"] + PRICES["mj_blend"] + PRICES["mj_shorten"]


def test_zoom_pan_and_modal_follow_the_parent_at_their_own_prices(world, mj, mj_b):
    _provider(world, mj, priority=0)
    user = _user(world)
    start = user.balance
    with _client(world_gateway(world), world.key(user)) as client:
        task_id = client.post("/mj/submit/imagine", json={"prompt": "a"}).json()["result"]
        _until_final(client, task_id)
        _provider(world, mj_b, priority=10)  # follow-ups still go to the parent's provider
        upstream = MidjourneyTask.objects.get(task_id=task_id).upstream_task_id
        zoom = client.post(
            "/mj/submit/action",
            json={"taskId": task_id, "customId": f"MJ::Outpaint::50::1::{upstream}::SOLO"},
        ).json()
        pan = client.post(
            "/mj/submit/action",
            json={"taskId": task_id, "customId": f"MJ::JOB::pan_left::1::{upstream}::SOLO"},
        ).json()
        assert _until_final(client, zoom["result"])["action"] == "ZOOM"
        assert _until_final(client, pan["result"])["action"] == "PAN"
        # a custom zoom asks for input: code 21 upstream, the client is told 1, the task waits in MODAL
        custom = client.post(
            "/mj/submit/action", json={"taskId": task_id, "customId": f"MJ::CustomZoom::{upstream}"}
        ).json()
        assert custom["code"] == 1
        waiting = client.get(f"/mj/task/{custom['result']}/fetch").json()
        assert waiting["status"] == "MODAL"
        modal = client.post(
            "/mj/submit/modal",
            json={"taskId": custom["result"], "prompt": "a --zoom 1.8", "maskBase64": IMAGE},
        ).json()
        assert modal["code"] == 1
        assert _until_final(client, modal["result"])["status"] == "SUCCESS"
    modal_sent = mj.submits()[-1]
    assert modal_sent["path"] == "/mj/submit/modal"
    assert modal_sent["json"] == {
        "taskId": MidjourneyTask.objects.get(task_id=custom["result"]).upstream_task_id,
        "prompt": "a --zoom 1.8",
        "maskBase64": IMAGE,
    }
    assert not mj_b.submits()
    models = dict(MidjourneyTask.objects.filter(user=user).values_list("action", "model"))
    assert models == {"IMAGINE": "mj_imagine", "ZOOM": "mj_zoom", "PAN": "mj_pan", "MODAL": "mj_modal"}
    _eventually(lambda: BillingRecord.objects.filter(user=user).count() == 5)
    expected = IMAGINE + 2 * PRICES["mj_zoom"] + PRICES["mj_pan"] + PRICES["mj_modal"]
    assert _ledger_matches(user, start) == expected


def test_bad_input_of_the_other_submits_is_refused_in_midjourney_shape(world, mj):
    _provider(world, mj)
    user = _user(world)
    with _client(world_gateway(world), world.key(user)) as client:
        done = client.post("/mj/submit/imagine", json={"prompt": "a"}).json()["result"]
        _until_final(client, done)
        mj.reset()
        cases = [
            ("/mj/submit/describe", {}, 400, 4, "base64"),
            ("/mj/submit/describe", {"base64": "data:image/png;base64,@@@"}, 400, 4, "base64"),
            ("/mj/submit/describe", {"base64": 42}, 400, 4, "base64"),
            ("/mj/submit/blend", {"base64Array": [IMAGE]}, 400, 4, "base64Array"),
            ("/mj/submit/blend", {"base64Array": IMAGE}, 400, 4, "base64Array"),
            ("/mj/submit/blend", {"base64Array": [IMAGE, "nope!"]}, 400, 4, "base64Array[1]"),
            ("/mj/submit/blend", {"base64Array": [IMAGE, IMAGE], "dimensions": "WIDE"}, 400, 4, "dimensions"),
            ("/mj/submit/shorten", {"prompt": ""}, 400, 4, "prompt"),
            ("/mj/submit/imagine", {"prompt": "a", "base64Array": "x"}, 400, 4, "base64Array"),
            ("/mj/submit/modal", {}, 400, 4, "taskId"),
            ("/mj/submit/modal", {"taskId": "unknown"}, 404, 3, "taskId"),
            ("/mj/submit/modal", {"taskId": done, "maskBase64": "%%"}, 400, 4, "maskBase64"),
            ("/mj/submit/action", {"taskId": done, "customId": 7}, 400, 4, "customId"),
        ]
        for path, body, status, code, param in cases:
            response = client.post(path, json=body)
            answer = response.json()
            assert response.status_code == status, (path, body, answer)
            assert answer["code"] == code and answer["result"] is None, (path, body, answer)
            assert answer["properties"]["param"] == param, (path, body, answer)
    assert not mj.submits()


def _wait(check, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_upstream_notify_updates_tasks_at_once_and_never_backwards(world, mj, settings):
    gateway = world_gateway(world)
    settings.MJ_NOTIFY_BASE_URL = gateway.url
    settings.MJ_POLL_INTERVAL = 3600  # fetches read the database only: the notify moves the task
    provider = _provider(world, mj)
    other = world.provider("http://127.0.0.1:9", type="midjourney", api_key=SECRET)  # never called
    from jobs.hooks import notify_token

    with _client(gateway, world.key(_user(world))) as client:
        task_id = client.post("/mj/submit/imagine", json={"prompt": "a"}).json()["result"]
        upstream = MidjourneyTask.objects.get(task_id=task_id).upstream_task_id
        hook = mj.submits()[0]["json"]["notifyHook"]
        assert hook == f"{gateway.url}/mj/notify/{provider.pk}/{notify_token(provider.pk)}"
        assert mj.push(upstream) == 200
        assert client.get(f"/mj/task/{task_id}/fetch").json()["status"] == "IN_PROGRESS"
        stale = dict(mj.tasks[upstream])  # an IN_PROGRESS report that will arrive late
        assert mj.push(upstream) == 200
        done = client.get(f"/mj/task/{task_id}/fetch").json()
        assert done["status"] == "SUCCESS" and done["imageUrl"]
        late = httpx.post(hook, json={k: v for k, v in stale.items() if not k.startswith("_")})
        assert late.status_code == 200
        assert client.get(f"/mj/task/{task_id}/fetch").json()["status"] == "SUCCESS"
    assert not [r for r in mj.requests if r["path"].endswith("/fetch") or "list-by" in r["path"]]
    # a wrong token, or another provider's token for this provider's path, is refused
    for url in (
        f"{gateway.url}/mj/notify/{provider.pk}/nope",
        f"{gateway.url}/mj/notify/{provider.pk}/{notify_token(other.pk)}",
        f"{gateway.url}/mj/notify/x/{notify_token(provider.pk)}",
    ):
        refused = httpx.post(url, json={"id": upstream, "status": "FAILURE"})
        assert refused.status_code == 401 and refused.json()["code"] == 9
    assert MidjourneyTask.objects.get(task_id=task_id).status == "SUCCESS"
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("mj_notify_url", provider.name, stdout=out)
    assert out.getvalue().strip() == hook


def test_poll_and_notify_racing_charge_once_and_refund_once(world, mj, settings):
    import threading

    from django.db import connection

    from jobs.polling import midjourney_tasks_poll

    gateway = world_gateway(world)
    settings.MJ_NOTIFY_BASE_URL = gateway.url
    _provider(world, mj)
    user = _user(world)
    start = user.balance
    mj.script({"steps": 1}, {"steps": 1, "fail": "upstream error"})
    with _client(gateway, world.key(user)) as client:
        ok = client.post("/mj/submit/imagine", json={"prompt": "a"}).json()["result"]
        bad = client.post("/mj/submit/imagine", json={"prompt": "b"}).json()["result"]
    upstream = [MidjourneyTask.objects.get(task_id=t).upstream_task_id for t in (ok, bad)]
    barrier = threading.Barrier(3)

    def poll():
        barrier.wait(5)
        try:
            midjourney_tasks_poll()
        finally:
            connection.close()

    def notify(upstream_id):
        barrier.wait(5)
        mj.push(upstream_id)

    threads = [threading.Thread(target=poll)] + [threading.Thread(target=notify, args=(u,)) for u in upstream]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    statuses = dict(MidjourneyTask.objects.filter(user=user).values_list("task_id", "status"))
    assert statuses == {ok: "SUCCESS", bad: "FAILURE"}
    _eventually(lambda: BillingRecord.objects.filter(user=user).count() == 3)
    kinds = sorted(BillingRecord.objects.filter(user=user).values_list("kind", flat=True))
    assert kinds == ["refund", "usage", "usage"]
    assert _ledger_matches(user, start) == IMAGINE


def test_client_notify_hook_gets_each_change_with_retries(world, mj, settings):
    settings.OUTBOUND_ALLOWED_HOSTS = [f"127.0.0.1:{mj.port}"]
    mj.hook_statuses.extend([500])  # the first delivery fails once, then goes through
    _provider(world, mj)
    with _client(world_gateway(world), world.key(_user(world))) as client:
        answer = client.post(
            "/mj-relax/mj/submit/imagine", json={"prompt": "a", "notifyHook": f"{mj.url}/hooks/c1"}
        ).json()
        task_id = answer["result"]
        assert "notifyHook" not in mj.submits()[0]["json"]  # the client's hook stays with the gateway
        _until_final(client, task_id)
    _wait(lambda: any(c["json"]["status"] == "SUCCESS" for c in mj.hook_calls))
    _wait(lambda: len(mj.hook_calls) == 3)  # IN_PROGRESS failed once and was retried, then SUCCESS
    calls = [c["json"] for c in mj.hook_calls]
    assert all(c["id"] == task_id and c["mode"] == "relax" for c in calls)
    # in the order of the changes: the retried IN_PROGRESS still comes before the SUCCESS
    assert [c["status"] for c in calls] == ["IN_PROGRESS", "IN_PROGRESS", "SUCCESS"]
    success = next(c for c in calls if c["status"] == "SUCCESS")
    assert success["imageUrl"] and success["progress"] == "100%" and success["buttons"]


def test_client_notify_hook_to_loopback_is_refused_unless_allowed(world, mj, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="jobs.hooks")
    _provider(world, mj)
    with _client(world_gateway(world), world.key(_user(world))) as client:
        for hook in (f"{mj.url}/hooks/x", "ftp://example.com/x", "not a url", f"http://[::1]:{mj.port}/h"):
            refused = client.post("/mj/submit/imagine", json={"prompt": "a", "notifyHook": hook})
            assert refused.status_code == 400, hook
            assert refused.json()["code"] == 4 and refused.json()["properties"]["param"] == "notifyHook"
        assert not mj.submits()
        # a name is checked once resolved, at delivery: localhost is loopback, so nothing is sent
        task_id = client.post(
            "/mj/submit/imagine", json={"prompt": "a", "notifyHook": f"http://localhost:{mj.port}/hooks/y"}
        ).json()["result"]
        assert _until_final(client, task_id)["status"] == "SUCCESS"
    _wait(lambda: sum("notifyHook refused" in r.getMessage() for r in caplog.records) >= 2)
    assert not mj.hook_calls


def test_stuck_tasks_time_out_and_are_refunded(world, mj, settings):
    from datetime import timedelta

    from django.utils import timezone

    from jobs.polling import midjourney_tasks_poll

    settings.MJ_TASK_TIMEOUT = 60
    _provider(world, mj)
    user = _user(world)
    start = user.balance
    with _client(world_gateway(world), world.key(user)) as client:
        by_poll = client.post("/mj/submit/imagine", json={"prompt": "a"}).json()["result"]
        by_fetch = client.post("/mj/submit/imagine", json={"prompt": "b"}).json()["result"]
        fresh = client.post("/mj/submit/imagine", json={"prompt": "c"}).json()["result"]
        MidjourneyTask.objects.filter(task_id__in=[by_poll, by_fetch]).update(
            submitted_at=timezone.now() - timedelta(seconds=61)
        )
        fetched = client.get(f"/mj/task/{by_fetch}/fetch").json()
        assert fetched["status"] == "FAILURE" and "Timed out" in fetched["failReason"]
        midjourney_tasks_poll()
    statuses = dict(MidjourneyTask.objects.filter(user=user).values_list("task_id", "status"))
    assert statuses == {by_poll: "FAILURE", by_fetch: "FAILURE", fresh: "IN_PROGRESS"}
    _eventually(lambda: BillingRecord.objects.filter(user=user).count() == 5)
    assert _ledger_matches(user, start) == IMAGINE  # three charges, two refunds


def test_fetch_reads_the_upstream_only_when_the_data_is_older_than_the_poll_interval(world, mj, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.MJ_POLL_INTERVAL = 60
    _provider(world, mj)
    with _client(world_gateway(world), world.key(_user(world))) as client:
        task_id = client.post("/mj/submit/imagine", json={"prompt": "a"}).json()["result"]
        assert client.get(f"/mj/task/{task_id}/fetch").json()["status"] == "SUBMITTED"
        assert not [r for r in mj.requests if r["path"].endswith("/fetch")]
        MidjourneyTask.objects.filter(task_id=task_id).update(
            refreshed_at=timezone.now() - timedelta(seconds=61)
        )
        assert client.get(f"/mj/task/{task_id}/fetch").json()["status"] == "IN_PROGRESS"
        assert len([r for r in mj.requests if r["path"].endswith("/fetch")]) == 1


def test_no_available_account_and_bad_secret_disable_the_provider(world, mj, mj_b):
    from providers.models import Provider

    first = _provider(world, mj, priority=10)
    second = _provider(world, mj_b, priority=5)
    user = _user(world)
    mj.script({"code": 3})  # midjourney-proxy: "no available account"
    with _client(world_gateway(world), world.key(user)) as client:
        answer = client.post("/mj/submit/imagine", json={"prompt": "a"}).json()
        assert answer["code"] == 1
        assert MidjourneyTask.objects.get(task_id=answer["result"]).provider_id == second.pk
        _wait(lambda: Provider.objects.get(pk=first.pk).status == Provider.Status.AUTO_DISABLED)
        assert "code 3" in Provider.objects.get(pk=first.pk).last_error
        assert client.post("/mj/submit/imagine", json={"prompt": "b"}).json()["code"] == 1
        assert len(mj.submits()) == 1  # out of rotation
        # a secret the upstream no longer takes: 401, disabled, and the submit fails over
        third = _provider(world, mj, priority=20)
        Provider.objects.filter(pk=second.pk).update(priority=0)
        mj.secret = "rotated"
        try:
            answer = client.post("/mj/submit/imagine", json={"prompt": "c"}).json()
        finally:
            mj.secret = SECRET
        assert answer["code"] == 1
        assert MidjourneyTask.objects.get(task_id=answer["result"]).provider_id == second.pk
        _wait(lambda: Provider.objects.get(pk=third.pk).status == Provider.Status.AUTO_DISABLED)


def test_polling_with_a_rejected_secret_disables_the_provider(world, mj):
    from jobs.polling import midjourney_tasks_poll
    from providers.models import Provider

    provider = _provider(world, mj)
    with _client(world_gateway(world), world.key(_user(world))) as client:
        task_id = client.post("/mj/submit/imagine", json={"prompt": "a"}).json()["result"]
    mj.secret = "rotated"
    try:
        midjourney_tasks_poll()
    finally:
        mj.secret = SECRET
    assert Provider.objects.get(pk=provider.pk).status == Provider.Status.AUTO_DISABLED
    assert MidjourneyTask.objects.get(task_id=task_id).status == "SUBMITTED"
    midjourney_tasks_poll()  # the next poll (secret fixed) catches up: a disabled provider's tasks go on
    assert MidjourneyTask.objects.get(task_id=task_id).status == "IN_PROGRESS"


def test_image_through_the_gateway_own_tasks_only_and_outbound_rules(world, mj, mj_b, settings):
    _provider(world, mj)
    alice, bob = _user(world, "alice"), _user(world, "bob")
    gateway = world_gateway(world)
    with _client(gateway, world.key(alice)) as a, _client(gateway, world.key(bob)) as b:
        task_id = a.post("/mj/submit/imagine", json={"prompt": "a"}).json()["result"]
        pending = a.post("/mj/submit/imagine", json={"prompt": "b"}).json()["result"]
        _until_final(a, task_id)
        settings.MJ_IMAGE_PROXY = False
        off = a.get(f"/mj/image/{task_id}")
        assert off.status_code == 404 and off.json()["code"] == 3
        assert off.json()["properties"]["error"] == "image_proxy_off"
        settings.MJ_IMAGE_PROXY = True
        image = a.get(f"/mj-fast/mj/image/{task_id}")
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content == png()
        for response in (
            b.get(f"/mj/image/{task_id}"),
            a.get("/mj/image/nope"),
            a.get(f"/mj/image/{pending}"),
        ):
            assert response.status_code == 404 and response.json()["code"] == 3
        # an image URL elsewhere on loopback is refused (the provider's own host is trusted)
        for url in (
            f"http://127.0.0.1:{mj_b.port}/images/x.png",
            f"http://localhost:{mj_b.port}/images/x.png",
        ):
            MidjourneyTask.objects.filter(task_id=task_id).update(image_url=url)
            refused = a.get(f"/mj/image/{task_id}")
            assert refused.status_code == 502 and refused.json()["code"] == 9, url
        assert not mj_b.requests
        settings.OUTBOUND_ALLOWED_HOSTS = [f"localhost:{mj_b.port}"]
        assert a.get(f"/mj/image/{task_id}").content == png()
        settings.MJ_IMAGE_MAX_BYTES = 10
        too_big = a.get(f"/mj/image/{task_id}")
        assert too_big.status_code == 502 and too_big.json()["properties"]["error"] == "image_too_large"


def test_bootstrap_sets_up_midjourney_so_the_demo_key_imagines(world, mj, fake):
    from io import StringIO

    from django.core.management import call_command

    from billing.models import ModelPrice
    from providers.models import Provider

    def bootstrap() -> str:
        out = StringIO()
        call_command(
            "bootstrap",
            "--demo",
            "--upstream-url",
            f"{fake.url}/v1",
            "--mj-upstream-url",
            mj.url,
            "--mj-secret",
            SECRET,
            stdout=out,
        )
        return next(line for line in out.getvalue().splitlines() if line.startswith("DEMO_API_KEY="))[13:]

    bootstrap()
    key = bootstrap()  # idempotent: one provider, one price per action
    assert Provider.objects.filter(type="midjourney").count() == 1
    assert ModelPrice.objects.filter(model__slug="mj_imagine").count() == 1
    assert ModelPrice.objects.filter(model__slug__startswith="mj_").count() >= 10
    demo = User.objects.get(username="demo")
    start = demo.balance
    with _client(world_gateway(world), key, header="mj-api-secret") as client:
        task_id = client.post("/mj/submit/imagine", json={"prompt": "a lighthouse"}).json()["result"]
        done = _until_final(client, task_id)
        assert done["status"] == "SUCCESS"
        upscale = next(b for b in done["buttons"] if b["label"] == "U1")
        follow = client.post("/mj/submit/action", json={"taskId": task_id, "customId": upscale["customId"]})
        assert _until_final(client, follow.json()["result"])["status"] == "SUCCESS"
    _eventually(lambda: BillingRecord.objects.filter(user=demo, kind="usage").count() == 2)
    demo.refresh_from_db()
    assert start - demo.balance == to_nanos("0.15")  # imagine 0.10 + upscale 0.05


def test_a_celery_worker_killed_mid_poll_loses_no_update(world, mj):
    """A real Celery worker is SIGKILLed while its poll waits on the upstream, after it
    applied the first batch of 100 tasks: those stay applied (each update commits on its
    own), and the next poll catches up the rest; every failed task is refunded once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from django.conf import settings

    from gateway_project.celery import app as celery_app
    from jobs.polling import BATCH, midjourney_tasks_poll
    from jobs.tasks import poll_midjourney
    from tests.test_billing import _database_url
    from tests.test_mj_console import make_task

    if not settings.REDIS_URL:
        pytest.skip("needs a Celery broker (Redis): make test-full runs this")
    provider = _provider(world, mj)
    user = _user(world)
    start = user.balance
    count = BATCH + 1
    mj.script(
        *({"steps": 1, "fail": "upstream error"} if i % 10 == 0 else {"steps": 1} for i in range(count))
    )
    tasks = []
    for i in range(count):
        answer = httpx.post(
            f"{mj.url}/mj/submit/imagine", json={"prompt": f"p{i}"}, headers={"mj-api-secret": SECRET}
        )
        tasks.append(make_task(user, provider, answer.json()["result"], f"k{i:04d}", price=IMAGINE))
    failing = {t.task_id for i, t in enumerate(tasks) if i % 10 == 0}
    mj.stall_lists_after = 1  # the second batch hangs: the worker is caught mid-poll
    env = {**os.environ, "DATABASE_URL": _database_url(), "MJ_POLL_INTERVAL": "0", "DB_POOL_MAX": "0"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "gateway_project", "worker", "--pool=solo", "-c", "1",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        celery_app.send_task(poll_midjourney.name)
        deadline = time.monotonic() + 60
        while mj.lists < 2:  # it applied the first batch and waits on the second
            assert worker.poll() is None and time.monotonic() < deadline, "the worker never polled"
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait(timeout=10)
        mj.release.set()
    finished = MidjourneyTask.objects.filter(user=user).exclude(status="SUBMITTED")
    assert finished.count() == BATCH  # the first batch's updates survived the kill
    assert MidjourneyTask.objects.filter(user=user, status="SUBMITTED").count() == 1
    midjourney_tasks_poll()  # the next poll catches up
    statuses = dict(MidjourneyTask.objects.filter(user=user).values_list("task_id", "status"))
    assert {t for t, s in statuses.items() if s == "FAILURE"} == failing
    assert all(s == "SUCCESS" for t, s in statuses.items() if t not in failing)
    refunds = BillingRecord.objects.filter(user=user, kind="refund")
    assert refunds.count() == len(failing) == refunds.values("request_id").distinct().count()
    user.refresh_from_db()
    assert user.balance == start + IMAGINE * len(failing)  # nothing charged here: created directly


def test_list_by_condition_reads_due_tasks_with_one_upstream_call(world, mj):
    _provider(world, mj)
    with _client(world_gateway(world), world.key(_user(world))) as client:
        ids = [client.post("/mj/submit/imagine", json={"prompt": f"p{i}"}).json()["result"] for i in range(5)]
        mj.requests.clear()
        listed = client.post("/mj/task/list-by-condition", json={"ids": [*reversed(ids), "nope"]}).json()
        assert [t["id"] for t in listed] == list(reversed(ids))
        assert {t["status"] for t in listed} == {"IN_PROGRESS"}
        calls = [r for r in mj.requests if r["path"].startswith("/mj/task/")]
        assert [r["path"] for r in calls] == ["/mj/task/list-by-condition"]  # one call, no fetch each
        assert sorted(calls[0]["json"]["ids"]) == sorted(
            MidjourneyTask.objects.filter(task_id__in=ids).values_list("upstream_task_id", flat=True)
        )
        again = client.post("/mj/task/list-by-condition", json={"ids": ids}).json()
        assert {t["status"] for t in again} == {"SUCCESS"}
