"""Hostile and generated input on every relay endpoint: never a 5xx, always an answer in
the endpoint's own error shape (issue 13, item 6).

Inputs come from hypothesis (derandomized, so the run is the same every time): arbitrary
JSON, and valid requests with one field replaced by arbitrary JSON; the count per endpoint
is printed and asserted (RELAY_FUZZ_EXAMPLES; `make test-full` runs 10,000). Hand-written
cases cover what generation rarely reaches: deep nesting, huge arrays, invalid UTF-8, a
lying Content-Length. The relay runs in process (its own
ASGI app on the test's event loop), routed to the real loopback fake upstream."""

from __future__ import annotations

import asyncio
import os

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from relay.app import RelayApp
from tests import factories

# per endpoint: 10,000 in `make test-full` (CI), 2,000 in the quicker `make test`
EXAMPLES = int(os.environ.get("RELAY_FUZZ_EXAMPLES", "2000"))
MODEL = "fuzz-model"
VALID = {
    "/v1/chat/completions": {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
    },
    "/v1/completions": {"model": MODEL, "prompt": "hi", "max_tokens": 5},
    "/v1/embeddings": {"model": MODEL, "input": "hi"},
    "/v1/messages": {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/messages/count_tokens": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/responses": {"model": MODEL, "input": "hi", "max_output_tokens": 5, "store": False},
    "/v1/responses/input_tokens": {"model": MODEL, "input": "hi"},
    "/mj/submit/imagine": {"prompt": "hi", "state": "s"},
}
ANTHROPIC = {"/v1/messages", "/v1/messages/count_tokens"}
MIDJOURNEY = {"/mj/submit/imagine"}  # routed to a real loopback midjourney-proxy fake

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = (
    "model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options", "n", "tools",
    "tool_choice", "stop", "stop_sequences", "system", "thinking", "prompt", "input", "temperature",
    "logprobs", "top_logprobs", "seed", "response_format", "metadata", "content", "role", "instructions",
    "max_output_tokens", "previous_response_id", "text", "reasoning", "include", "store", "background",
)  # fmt: skip


MJ_FIELDS = ("prompt", "base64Array", "notifyHook", "state", "taskId", "action", "index", "customId")


def bodies(path: str):
    valid = VALID[path]
    fields = MJ_FIELDS if path in MIDJOURNEY else FIELDS
    replaced = st.builds(lambda field, value: {**valid, field: value}, st.sampled_from(fields), json_values)
    message_items = st.builds(
        lambda items: {**valid, "messages": items},
        st.lists(
            json_values
            | st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "assistant", "system", "tool", "developer", 7]),
                    "content": json_values,
                }
            ),
            max_size=4,
        ),
    )
    return (replaced | message_items | json_values).map(orjson.dumps)


class InProcess:
    """The relay app on one event loop, called with raw ASGI messages."""

    def __init__(self) -> None:
        from django.conf import settings

        from quotas.counters import LocalCounterStore, RedisCounterStore

        self.loop = asyncio.new_event_loop()
        self.app = RelayApp()
        # a store of its own: the process's Redis store belongs to the gateway server's event
        # loop (another thread); driving its connection from this loop crashed the process
        self.app.store = RedisCounterStore(settings.REDIS_URL) if settings.REDIS_URL else LocalCounterStore()
        self.loop.run_until_complete(self.app.startup())

    def close(self) -> None:
        self.loop.run_until_complete(self.app.shutdown())
        self.loop.close()

    def call(self, path: str, body: bytes, key: str, *, headers=(), chunks=None) -> tuple[int, bytes]:
        return self.loop.run_until_complete(self._call(path, body, key, headers, chunks))

    async def _call(self, path, body, key, headers, chunks) -> tuple[int, bytes]:
        pieces = list(chunks) if chunks is not None else [body]
        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "query_string": b"",
            "headers": [(b"authorization", f"Bearer {key}".encode()), *headers],
            "client": ("127.0.0.1", 50000),
        }
        sent: list[dict] = []
        queue = [
            {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
            for i, p in enumerate(pieces)
        ]

        async def receive():
            if queue:
                return queue.pop(0)
            await asyncio.sleep(3600)  # never disconnects

        async def send(message):
            sent.append(message)

        await asyncio.wait_for(self.app(scope, receive, send), timeout=30)
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.fixture(scope="module")
def _midjourney():
    from tests.fakes.midjourney import FakeMidjourney

    with FakeMidjourney(secret="fuzz") as fake_mj:
        yield fake_mj


@pytest.fixture
def relay(transactional_db, fake, _midjourney):
    """The relay in process, a key, the model routed to the fake upstream and mj_imagine
    (one nano a task) to the fake midjourney-proxy."""
    from keys.services import api_key_create
    from providers.models import ProviderModel
    from providers.services import provider_create
    from relay.config import bump_version

    bump_version()
    user = factories.UserFactory(username="fuzzer")
    key = api_key_create(user=user).plain
    provider = provider_create(name="fuzz-openai", type="openai", base_url=fake.url + "/v1")
    ProviderModel.objects.create(provider=provider, model=factories.ModelFactory(slug=MODEL))
    mj = provider_create(name="fuzz-mj", type="midjourney", base_url=_midjourney.url, api_key="fuzz")
    imagine = factories.ModelFactory(slug="mj_imagine")
    factories.PriceFactory(
        model=imagine, input_per_1m=0, output_per_1m=0, cached_input_per_1m=0, per_request=1
    )
    ProviderModel.objects.create(provider=mj, model=imagine)
    app = InProcess()
    try:
        yield app, key
    finally:
        app.close()
        _midjourney.reset()


def check(path: str, status: int, payload: bytes) -> None:
    assert status < 500, (status, payload[:300])
    if status >= 400:
        error = orjson.loads(payload)
        if path in ANTHROPIC:
            assert error["type"] == "error" and error["error"]["message"], error
        elif path in MIDJOURNEY:
            assert error["code"] in (3, 4, 9) and error["description"] and error["result"] is None, error
        else:
            assert error["error"]["message"], error


@pytest.mark.parametrize("path", list(VALID))
def test_generated_inputs_never_get_a_5xx(relay, path, request):
    app, key = relay
    seen = []

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(bodies(path))
    def one(body: bytes) -> None:
        seen.append(1)
        status, payload = app.call(path, body, key)
        check(path, status, payload)

    one()
    request.node.user_properties.append(("generated_inputs", len(seen)))
    print(f"{path}: {len(seen)} generated inputs, no 5xx")
    assert len(seen) == EXAMPLES


def nested(depth: int, path: str) -> bytes:
    """A message whose content is ``depth`` nested arrays, in the field the endpoint reads."""
    field = b"input" if "responses" in path else b"messages"
    return (
        b'{"model": "fuzz-model", "max_tokens": 5, "'
        + field
        + b'": [{"role": "user", "content": '
        + (b"[" * depth + b"]" * depth)
        + b"}]}"
    )


HOSTILE = {
    "nesting 300": "nested",
    "nesting 5000": "nested",
    "huge array": None,  # per endpoint: a list field it reads, 200,000 items of the wrong kind
    "invalid utf-8": b'{"model": "fuzz-model", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
    "not json": b"\x00\x01 definitely not json",
    "empty": b"",
    "array body": b"[1, 2, 3]",
    "huge number": b'{"model": "fuzz-model", "max_tokens": 1' + b"0" * 400 + b', "messages": []}',
}


@pytest.mark.parametrize("path", list(VALID))
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_bodies_get_a_4xx_in_the_endpoints_shape(relay, path, case):
    app, key = relay
    body = HOSTILE[case]
    if body == "nested":
        body = nested(int(case.split()[1]), path)
    elif body is None:
        field = (
            "base64Array"
            if path in MIDJOURNEY
            else "stop_sequences"
            if path in ANTHROPIC
            else "input"
            if "embeddings" in path or "responses" in path
            else "stop"
        )
        body = orjson.dumps({**VALID[path], field: [*range(100_000), *([{}] * 100_000)]})
    status, payload = app.call(path, body, key)
    check(path, status, payload)
    assert 400 <= status < 500


@pytest.mark.parametrize("path", list(VALID))
def test_lying_content_length(relay, path):
    app, key = relay
    body = orjson.dumps(VALID[path])
    # declared longer than what arrives, then shorter: either way a clean answer
    for declared in (len(body) + 1000, max(len(body) - 10, 1)):
        status, payload = app.call(path, body, key, headers=[(b"content-length", str(declared).encode())])
        check(path, status, payload)
    status, payload = app.call(path, b"", key, headers=[(b"content-length", b"not-a-number")])
    check(path, status, payload)
    assert status == 400
    status, payload = app.call(path, b"", key, headers=[(b"content-length", b"999999999999")])
    check(path, status, payload)
    assert status == 413
