"""Tests for the outbound-URL guard, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import datetime
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from app.net.url_guard import (
    MAX_URL_LENGTH,
    FetchFailed,
    UrlPolicy,
    UrlRefused,
    check_url_syntax,
    fetch_bytes,
    post_json,
    resolve_and_check,
)

# 1x1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
LIMIT = 1000
PRIVATE_OK = UrlPolicy(allow_private=True)
SMALL = UrlPolicy(allow_private=True, max_bytes=LIMIT)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Writer = Callable[[asyncio.StreamWriter], Awaitable[None]]


@dataclass
class LocalServer:
    """Minimal HTTP/1.1 server; records every request it receives."""

    requests: list[Recorded] = field(default_factory=list)
    sni_names: list[str | None] = field(default_factory=list)
    port: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _never: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            request = await _read_request(reader)
            self.requests.append(request)
            await self._route(request.path)(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client under test hung up early on purpose
        finally:
            writer.close()
            self._tasks.discard(task)

    def _route(self, path: str) -> Writer:
        routes: dict[str, Writer] = {
            "/image.png": lambda w: _respond(w, 200, PNG, {"Content-Type": "image/png"}),
            "/redirect": lambda w: _respond(w, 302, b"", {"Location": "/image.png"}),
            "/big": lambda w: _respond(w, 200, b"x" * (LIMIT * 10)),
            "/chunked": lambda w: _respond_chunked(w, [b"y" * 100] * 30),
            "/slow": self._stall,
            "/error": lambda w: _respond(w, 500, b"boom"),
            "/hook": lambda w: _respond(w, 204, b""),
            "/hook-redirect": lambda w: _respond(w, 307, b"", {"Location": "/hook"}),
        }
        return routes.get(path.split("?")[0], lambda w: _respond(w, 404, b""))

    async def _stall(self, writer: asyncio.StreamWriter) -> None:
        # Headers arrive but the body never does, so the deadline must cover body streaming.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        await writer.drain()
        await self._never.wait()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _read_request(reader: asyncio.StreamReader) -> Recorded:
    head = await reader.readuntil(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, path, _ = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        if line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return Recorded(method, path, headers, body)


async def _respond(
    writer: asyncio.StreamWriter, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()


async def _respond_chunked(writer: asyncio.StreamWriter, chunks: list[bytes]) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    for chunk in chunks:
        writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _start(ssl_context: ssl.SSLContext | None = None) -> tuple[LocalServer, asyncio.Server]:
    local = LocalServer()
    server = await asyncio.start_server(local.handle, "127.0.0.1", 0, ssl=ssl_context)
    local.port = server.sockets[0].getsockname()[1]
    return local, server


async def _shutdown(local: LocalServer, server: asyncio.Server) -> None:
    server.close()
    await local.stop()
    await server.wait_closed()


@pytest.fixture
async def srv() -> AsyncIterator[LocalServer]:
    local, server = await _start()
    yield local
    await _shutdown(local, server)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as c:
        yield c


def url(srv: LocalServer, path: str, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{srv.port}{path}"


# --- static checks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("10.1.2.3", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.1.1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("[fd00:ec2::254]", "metadata"),
        ("metadata.google.internal", "metadata"),
        ("[::1]", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("127.1", "loopback"),
        ("2130706433", "loopback"),
        ("[fd12:3456::1]", "private"),
        ("[fe80::1]", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_forbidden_literals_refused(target: str, kind: str) -> None:
    with pytest.raises(UrlRefused) as info:
        check_url_syntax(f"https://{target}/image.png", UrlPolicy())
    assert kind in info.value.reason
    assert "private targets are not allowed" in info.value.reason


def test_loopback_reason_text() -> None:
    with pytest.raises(UrlRefused) as info:
        check_url_syntax("http://127.0.0.1/x", UrlPolicy())
    assert info.value.reason == "address 127.0.0.1 is loopback; private targets are not allowed"


@pytest.mark.parametrize("target", ["https://8.8.8.8/a.png", "https://example.com/a.png"])
def test_public_targets_pass_static_check(target: str) -> None:
    check_url_syntax(target, UrlPolicy())


@pytest.mark.parametrize(
    "target", ["http://user:pass@example.com/a.png", "https://token@example.com/a.png"]
)
def test_userinfo_refused(target: str) -> None:
    with pytest.raises(UrlRefused, match="credentials"):
        check_url_syntax(target, UrlPolicy(allow_private=True))


@pytest.mark.parametrize(
    "target",
    [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "gopher://example.com/",
        "data:image/png;base64,AAAA",
        "/relative/path.png",
    ],
)
def test_non_http_schemes_refused(target: str) -> None:
    with pytest.raises(UrlRefused, match="scheme"):
        check_url_syntax(target, UrlPolicy(allow_private=True))


def test_overlong_and_hostless_urls_refused() -> None:
    with pytest.raises(UrlRefused, match="longer"):
        check_url_syntax("https://example.com/" + "a" * MAX_URL_LENGTH, UrlPolicy())
    with pytest.raises(UrlRefused, match="no host"):
        check_url_syntax("http:///a.png", UrlPolicy())


# --- resolution -------------------------------------------------------------------------------


def _loopback_alias() -> str:
    """A name other than "localhost" that resolves only to loopback, so DNS does the work."""
    for name in ("ip6-localhost", "ip6-loopback", socket.gethostname()):
        try:
            infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
        except OSError:
            continue
        if infos and all(str(info[4][0]) in ("127.0.0.1", "::1") for info in infos):
            return name
    pytest.skip("no non-localhost name resolving to loopback on this machine")


async def test_name_resolving_to_loopback_refused(srv: LocalServer) -> None:
    with pytest.raises(UrlRefused, match=r"resolves to .*loopback"):
        await resolve_and_check(url(srv, "/image.png", _loopback_alias()), UrlPolicy())


async def test_resolve_returns_vetted_addresses() -> None:
    assert await resolve_and_check("http://127.0.0.1/x", PRIVATE_OK) == ["127.0.0.1"]


# --- fetch_bytes ------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_loopback_fetch_refused_by_default(
    srv: LocalServer, client: httpx.AsyncClient, host: str
) -> None:
    with pytest.raises(UrlRefused, match="loopback"):
        await fetch_bytes(client, url(srv, "/image.png", host), UrlPolicy())
    assert srv.requests == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_allowed_when_private_targets_allowed(
    srv: LocalServer, client: httpx.AsyncClient, host: str
) -> None:
    body, content_type = await fetch_bytes(client, url(srv, "/image.png", host), PRIVATE_OK)
    assert body == PNG
    assert content_type == "image/png"
    # Connected to the vetted IP, yet the server still sees the name the user gave.
    assert srv.requests[0].headers["host"] == f"{host}:{srv.port}"


async def test_redirect_not_followed(srv: LocalServer, client: httpx.AsyncClient) -> None:
    with pytest.raises(FetchFailed, match="redirect"):
        await fetch_bytes(client, url(srv, "/redirect"), PRIVATE_OK)
    assert [r.path for r in srv.requests] == ["/redirect"]


async def test_declared_length_over_limit_refused(
    srv: LocalServer, client: httpx.AsyncClient
) -> None:
    with pytest.raises(FetchFailed, match=f"limit is {LIMIT}"):
        await fetch_bytes(client, url(srv, "/big"), SMALL)


async def test_chunked_body_over_limit_aborted(srv: LocalServer, client: httpx.AsyncClient) -> None:
    with pytest.raises(FetchFailed, match=f"larger than {LIMIT} bytes"):
        await fetch_bytes(client, url(srv, "/chunked"), SMALL)


async def test_chunked_body_under_limit_read_whole(
    srv: LocalServer, client: httpx.AsyncClient
) -> None:
    body, _ = await fetch_bytes(client, url(srv, "/chunked"), PRIVATE_OK)
    assert body == b"y" * 3000


async def test_timeout_is_fetch_failed(srv: LocalServer, client: httpx.AsyncClient) -> None:
    policy = UrlPolicy(allow_private=True, timeout_s=0.3)
    with pytest.raises(FetchFailed, match="timed out"):
        await fetch_bytes(client, url(srv, "/slow"), policy)


async def test_server_error_is_fetch_failed_without_secrets(
    srv: LocalServer, client: httpx.AsyncClient
) -> None:
    with pytest.raises(FetchFailed, match="HTTP 500") as info:
        await fetch_bytes(client, url(srv, "/error?X-Amz-Signature=s3cr3t"), PRIVATE_OK)
    assert "s3cr3t" not in str(info.value)


async def test_connection_refused_is_fetch_failed(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(FetchFailed, match="ConnectError") as info:
        await fetch_bytes(client, f"http://127.0.0.1:{closed_port}/a?token=s3cr3t", PRIVATE_OK)
    assert "s3cr3t" not in str(info.value)


# --- post_json --------------------------------------------------------------------------------


async def test_post_json_delivers_body_and_headers(
    srv: LocalServer, client: httpx.AsyncClient
) -> None:
    payload = b'{"job_id": "j1", "status": "succeeded"}'
    headers = {"webhook-id": "msg_1", "webhook-signature": "v1,abc"}
    response = await post_json(client, url(srv, "/hook", "localhost"), payload, headers, PRIVATE_OK)
    assert response.status_code == 204
    [got] = srv.requests
    assert (got.method, got.path, got.body) == ("POST", "/hook", payload)
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-signature"] == "v1,abc"
    assert got.headers["host"] == f"localhost:{srv.port}"


async def test_post_json_does_not_follow_redirect(
    srv: LocalServer, client: httpx.AsyncClient
) -> None:
    response = await post_json(client, url(srv, "/hook-redirect"), b"{}", {}, PRIVATE_OK)
    assert response.status_code == 307
    assert [r.path for r in srv.requests] == ["/hook-redirect"]


async def test_post_json_refuses_loopback_by_default(
    srv: LocalServer, client: httpx.AsyncClient
) -> None:
    with pytest.raises(UrlRefused, match="loopback"):
        await post_json(client, url(srv, "/hook"), b"{}", {}, UrlPolicy())
    assert srv.requests == []


async def test_post_json_timeout_is_fetch_failed(
    srv: LocalServer, client: httpx.AsyncClient
) -> None:
    policy = UrlPolicy(allow_private=True, timeout_s=0.3)
    with pytest.raises(FetchFailed, match="timed out"):
        await post_json(client, url(srv, "/slow"), b"{}", {}, policy)


# --- TLS: pinned IP, certificate still checked against the hostname ----------------------------


@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def _make_pki(server_name: str) -> Pki:
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: str
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        build("test ca", ca_key, "test ca")
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    leaf = (
        build(server_name, key, "test ca")
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(server_name)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Pki(ca.public_bytes(pem), leaf.public_bytes(pem), key_pem)


async def _tls_server(pki: Pki, directory: Path) -> tuple[LocalServer, asyncio.Server]:
    (directory / "cert.pem").write_bytes(pki.cert_pem)
    (directory / "key.pem").write_bytes(pki.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    local = LocalServer()

    def record_sni(_sock: object, name: str | None, _ctx: ssl.SSLContext) -> None:
        local.sni_names.append(name)

    context.sni_callback = record_sni
    server = await asyncio.start_server(local.handle, "127.0.0.1", 0, ssl=context)
    local.port = server.sockets[0].getsockname()[1]
    return local, server


@pytest.mark.parametrize(("cert_name", "ok"), [("localhost", True), ("other.test", False)])
async def test_https_verifies_certificate_against_hostname(
    tmp_path: Path, cert_name: str, ok: bool
) -> None:
    pki = _make_pki(cert_name)
    local, server = await _tls_server(pki, tmp_path)
    verify = ssl.create_default_context(cadata=pki.ca_pem.decode())
    target = f"https://localhost:{local.port}/image.png"
    try:
        async with httpx.AsyncClient(verify=verify, trust_env=False) as tls_client:
            if ok:
                body, _ = await fetch_bytes(tls_client, target, PRIVATE_OK)
                assert body == PNG
            else:
                with pytest.raises(FetchFailed, match="CERTIFICATE_VERIFY_FAILED"):
                    await fetch_bytes(tls_client, target, PRIVATE_OK)
    finally:
        await _shutdown(local, server)
    assert local.sni_names and set(local.sni_names) == {"localhost"}
