"""core/outbound: refusals tested below the socket with a fake resolver (no connection to a
non-loopback address is ever opened), allowed fetches against real loopback servers."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp.abc import AbstractResolver

from core import outbound
from tests.fakes.searxng import FakeSearxng


class FakeResolver(AbstractResolver):
    """Answers from a table; everything it was asked is recorded."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[tuple[str, int]] = []

    async def resolve(self, host, port=0, family=0):
        self.asked.append((host, port))
        return [
            {"hostname": host, "host": address, "port": port, "family": 0, "proto": 0, "flags": 0}
            for address in self.table[host]
        ]

    async def close(self):
        pass


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.0.0.2",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "2002:0a00:0001::1",  # 6to4 of 10.0.0.1
        "not-an-ip",
    ],
)
def test_non_public_addresses_are_refused(address):
    assert not outbound.is_public_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert outbound.is_public_address(address)


@pytest.mark.parametrize(
    "addresses",
    [["10.0.0.7"], ["169.254.169.254"], ["::ffff:192.168.0.1"], ["93.184.216.34", "127.0.0.1"], []],
)
def test_guarded_resolver_refuses_any_non_public_answer(addresses):
    fake = FakeResolver({"intranet.test": addresses})
    guarded = outbound.GuardedResolver(fake, allowed=set())
    with pytest.raises(outbound.OutboundRefused):
        asyncio.run(guarded.resolve("intranet.test", 80))
    assert fake.asked == [("intranet.test", 80)]


def test_guarded_resolver_lets_allow_listed_host_port_through():
    fake = FakeResolver({"search.internal": ["10.0.0.9"]})
    guarded = outbound.GuardedResolver(fake, allowed={("search.internal", 8080)})
    assert asyncio.run(guarded.resolve("search.internal", 8080))[0]["host"] == "10.0.0.9"
    with pytest.raises(outbound.OutboundRefused):  # same host, another port
        asyncio.run(guarded.resolve("search.internal", 8081))


@pytest.fixture
def site():
    with FakeSearxng() as server:
        yield server


def test_fetch_refuses_a_name_resolving_to_a_private_address(settings, site, monkeypatch):
    """The fetch path itself: the fake resolver answers 10.0.0.7; nothing is connected."""
    settings.OUTBOUND_ALLOWED_HOSTS = []
    fake = FakeResolver({"intranet.test": ["10.0.0.7"]})
    monkeypatch.setattr(outbound, "base_resolver", lambda: fake)
    with pytest.raises(outbound.OutboundRefused):
        asyncio.run(outbound.fetch("http://intranet.test/admin"))
    assert fake.asked == [("intranet.test", 80)]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/", "gopher://x/", "http:///nohost"])
def test_fetch_refuses_other_schemes(settings, url):
    settings.OUTBOUND_ALLOWED_HOSTS = []
    with pytest.raises(outbound.OutboundRefused):
        asyncio.run(outbound.fetch(url))


def test_a_network_failure_is_outbound_failed_naming_its_cause(settings):
    """Nothing listens on the port: the caller gets OutboundFailed (no aiohttp type to know)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed when the block ends: nobody listens there
    settings.OUTBOUND_ALLOWED_HOSTS = [f"127.0.0.1:{port}"]
    with pytest.raises(outbound.OutboundFailed) as failed:
        asyncio.run(outbound.fetch(f"http://127.0.0.1:{port}/page"))
    assert failed.value.kind == "ClientConnectorError"
    assert outbound.failure_kind(failed.value) == "ClientConnectorError"
    assert outbound.failure_kind(TimeoutError()) == "TimeoutError"


def test_fetch_allowed_loopback_and_refusals_of_other_loopback_targets(settings, site):
    settings.OUTBOUND_ALLOWED_HOSTS = [f"127.0.0.1:{site.port}"]
    result = asyncio.run(outbound.fetch(f"{site.url}/page/python"))
    assert result.status == 200 and b"Python" in result.body and not result.truncated
    seen = len(site.requests)
    for url in (
        f"http://127.0.0.2:{site.port}/page/python",  # another loopback address
        f"http://localhost:{site.port}/page/python",  # a name resolving to loopback
        f"http://[::1]:{site.port}/page/python",
        f"http://[::ffff:127.0.0.1]:{site.port}/page/python",
        f"http://127.0.0.1:{site.port + 1}/page/python",  # another port
        f"http://2130706433:{site.port}/page/python",  # a legacy numeric form of 127.0.0.1
    ):
        with pytest.raises((outbound.OutboundRefused, ValueError)):
            asyncio.run(outbound.fetch(url))
    assert len(site.requests) == seen  # nothing reached the server


def test_fetch_checks_every_redirect(settings, site):
    settings.OUTBOUND_ALLOWED_HOSTS = [f"127.0.0.1:{site.port}"]
    # a redirect within the allow-list is followed
    result = asyncio.run(outbound.fetch(f"{site.url}/redirect?to=/page/python"))
    assert result.status == 200 and result.url.endswith("/page/python")
    # one to loopback elsewhere is refused before anything is sent there
    with pytest.raises(outbound.OutboundRefused):
        asyncio.run(outbound.fetch(f"{site.url}/redirect?to=http://localhost:{site.port}/page/python"))
    assert [r["path"] for r in site.requests][-1] == "/redirect"
    settings.OUTBOUND_MAX_REDIRECTS = 2
    with pytest.raises(outbound.OutboundRefused, match="redirects"):
        asyncio.run(
            outbound.fetch(f"{site.url}/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/page/python")
        )


def test_fetch_caps_size_and_time(settings, site):
    settings.OUTBOUND_ALLOWED_HOSTS = [f"127.0.0.1:{site.port}"]
    result = asyncio.run(outbound.fetch(f"{site.url}/big", max_bytes=1024))
    assert result.truncated and len(result.body) == 1024
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(outbound.fetch(f"{site.url}/slow", timeout=0.3))
