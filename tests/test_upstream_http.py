"""The relay's HTTP/1.1 client (relay/upstream_http.py) against real loopback servers that
answer exactly the bytes each test writes: keep-alive reuse, chunked, gzip and deflate
bodies, bodies ended by the connection's close, streams read as they arrive, read
timeouts, back-pressure, idle connections the server closed, broken answers, TLS."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import ssl
import zlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from relay import upstream_http
from relay.upstream_http import UpstreamClient, UpstreamProtocolError

BODY = b'{"model":"gpt-4o-mini","messages":[]}'


class Server:
    """A loopback server: ``handler(reader, writer, request)`` answers each request (its
    head and body as bytes); connections and requests are recorded."""

    def __init__(self, handler, ssl_context=None) -> None:
        self.handler = handler
        self.ssl = ssl_context
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl)
        self.port = self.server.sockets[0].getsockname()[1]
        scheme = "https" if self.ssl else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc) -> None:
        for writer in self.writers:
            writer.close()
        self.server.close()

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + (await reader.readexactly(length) if length else b"")
                self.requests.append(request)
                if await self.handler(reader, writer, request) is False:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def answer(body: bytes, *, status: bytes = b"200 OK", headers: bytes = b""):
    async def handler(reader, writer, request):
        writer.write(
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: application/json\r\n"
            + headers
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        await writer.drain()

    return handler


async def test_one_write_per_request_and_the_connection_is_reused():
    async with Server(answer(b'{"ok":1}')) as server:
        client = UpstreamClient()
        for _ in range(3):
            response = await client.request(
                "POST",
                f"{server.url}/v1/chat/completions?x=1",
                data=BODY,
                headers={"Authorization": "Bearer sk-up", "Content-Type": "application/json"},
                read_timeout=5,
            )
            assert (response.status, await response.read()) == (200, b'{"ok":1}')
            assert response.headers["content-type"] == "application/json"
            response.release()
        await client.close()
    assert server.connections == 1
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Authorization: Bearer sk-up" in lines
    assert b"Content-Length: %d" % len(BODY) in lines
    assert b"Accept-Encoding: gzip, deflate" in lines
    assert any(line.startswith(b"User-Agent: ") for line in lines)
    assert body == BODY


async def test_chunked_gzip_and_deflate_bodies_are_decoded():
    text = b'{"choices":[{"message":{"content":"' + b"hello " * 2000 + b'"}}]}'
    packed = gzip.compress(text)

    async def chunked_gzip(reader, writer, request):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n")
        for start in range(0, len(packed), 100):
            piece = packed[start : start + 100]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    async with Server(chunked_gzip) as server:
        client = UpstreamClient()
        response = await client.request("POST", f"{server.url}/v1/x", data=BODY, read_timeout=5)
        assert await response.read() == text
        response.release()
        await client.close()
    async with Server(answer(zlib.compress(text), headers=b"Content-Encoding: deflate\r\n")) as server:
        client = UpstreamClient()
        response = await client.request("POST", f"{server.url}/v1/x", data=BODY, read_timeout=5)
        assert await response.read() == text
        await client.close()


async def test_a_body_ended_by_the_close_is_whole_and_the_connection_is_not_reused():
    async def close_delimited(reader, writer, request):
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        return False

    async with Server(close_delimited) as server:
        client = UpstreamClient()
        for _ in range(2):
            response = await client.request("GET", f"{server.url}/v1/models", read_timeout=5)
            assert await response.read() == b"all of it"
            response.release()
        await client.close()
    assert server.connections == 2


async def test_a_stream_is_handed_on_as_it_arrives():
    go_on = asyncio.Event()

    async def stream(reader, writer, request):
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(b"8\r\ndata: 1\n\r\n")
        await writer.drain()
        await go_on.wait()
        writer.write(b"8\r\ndata: 2\n\r\n0\r\n\r\n")
        await writer.drain()

    async with Server(stream) as server:
        client = UpstreamClient()
        response = await client.request("POST", f"{server.url}/v1/x", data=BODY, read_timeout=5)
        pieces = response.content.iter_any()
        assert await asyncio.wait_for(pieces.__anext__(), 2) == b"data: 1\n"  # before the rest exists
        go_on.set()
        assert [piece async for piece in pieces] == [b"data: 2\n"]
        response.release()
        await client.close()


async def test_read_timeout_counts_silence_while_waiting_not_a_slow_reader():
    async def stall(reader, writer, request):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfirs\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async with Server(stall) as server:
        client = UpstreamClient()
        response = await client.request("POST", f"{server.url}/v1/x", data=BODY, read_timeout=0.3)
        pieces = response.content.iter_any()
        await asyncio.sleep(0.6)  # the caller is slow: not the upstream's silence
        assert await pieces.__anext__() == b"firs"
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await pieces.__anext__()
        assert 0.25 < asyncio.get_running_loop().time() - started < 2
        response.close()
        await client.close()


async def test_an_unread_stream_stops_the_socket_reading_at_a_bound():
    total = 4 * 1024 * 1024

    async def flood(reader, writer, request):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        for _ in range(total // 65536):
            writer.write(b"x" * 65536)
            await writer.drain()

    async with Server(flood) as server:
        client = UpstreamClient()
        response = await client.request("GET", f"{server.url}/big", read_timeout=5)
        await asyncio.sleep(0.5)  # the server writes as fast as it can; nobody reads
        held = response._buffered
        assert held <= upstream_http.PAUSE_BYTES + 256 * 1024, held
        received = 0
        async for piece in response.content.iter_any():
            received += len(piece)
        assert received == total
        await client.close()


async def test_an_idle_connection_the_server_closed_is_not_used_again():
    async def once(reader, writer, request):
        await answer(b"{}")(reader, writer, request)
        return False  # keep-alive promised, then the server closes it while idle

    async with Server(once) as server:
        client = UpstreamClient()
        for _ in range(2):
            response = await client.request("POST", f"{server.url}/v1/x", data=BODY, read_timeout=5)
            assert await response.read() == b"{}"
            response.release()
            await asyncio.sleep(0.1)
        await client.close()
    assert server.connections == 2


async def test_cut_and_broken_answers_are_connection_errors():
    async def cut(reader, writer, request):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()
        return False

    async def garbage(reader, writer, request):
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    async with Server(cut) as server:
        client = UpstreamClient()
        response = await client.request("POST", f"{server.url}/v1/x", data=BODY, read_timeout=5)
        with pytest.raises(ConnectionError):
            await response.read()
        await client.close()
    async with Server(garbage) as server:
        client = UpstreamClient()
        with pytest.raises(UpstreamProtocolError):
            await client.request("POST", f"{server.url}/v1/x", data=BODY, read_timeout=5)
        await client.close()


async def test_header_injection_and_bad_urls_never_reach_the_wire():
    async with Server(answer(b"{}")) as server:
        client = UpstreamClient()
        with pytest.raises(ValueError):
            await client.request("POST", f"{server.url}/v1/x", data=BODY, headers={"X-A": "1\r\nX-B: 2"})
        with pytest.raises(ValueError):
            await client.request("POST", "ftp://127.0.0.1/x", data=BODY)
        await client.close()
    assert server.connections == 0


async def test_an_interim_100_continue_is_skipped():
    async def interim(reader, writer, request):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with Server(interim) as server:
        client = UpstreamClient()
        response = await client.request("POST", f"{server.url}/v1/x", data=BODY, read_timeout=5)
        assert (response.status, await response.read()) == (201, b"ok")
        await client.close()


def _self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


async def test_tls_with_certificate_checks(tmp_path):
    cert, key = _self_signed()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    async with Server(answer(b'{"tls":true}'), ssl_context=server_side) as server:
        trusting = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        client = UpstreamClient(ssl_context=trusting)
        response = await client.request("POST", f"{server.url}/v1/x", data=BODY, read_timeout=5)
        assert await response.read() == b'{"tls":true}'
        await client.close()
        strict = UpstreamClient()  # the system's roots: a self-signed certificate is refused
        with pytest.raises(ssl.SSLError):
            await strict.request("POST", f"{server.url}/v1/x", data=BODY, connect_timeout=5)
        await strict.close()


async def test_a_burst_of_new_connections_resolves_the_host_once(monkeypatch):
    async with Server(answer(b"{}")) as server:
        client = UpstreamClient()
        lookups = []
        real = client.loop.getaddrinfo

        async def counting(host, port, **kwargs):
            lookups.append(host)
            return await real(host, port, **kwargs)

        monkeypatch.setattr(client.loop, "getaddrinfo", counting)

        async def one():
            response = await client.request("POST", f"http://localhost:{server.port}/v1/x", data=BODY)
            body = await response.read()
            response.release()
            return body

        assert await asyncio.gather(*[one() for _ in range(50)]) == [b"{}"] * 50
        await client.close()
    assert lookups == ["localhost"]
    assert server.connections == 50  # all at once: fifty connections, one lookup
