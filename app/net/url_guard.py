"""Outbound-URL guard for user-supplied URLs (input images) and webhook deliveries.

Both features make the gateway issue requests to URLs chosen by API users, which is the
classic server-side request forgery (SSRF) setup: without this guard a user could make the
gateway read cloud metadata credentials or poke services on the private network.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

__all__ = [
    "MAX_URL_LENGTH",
    "FetchFailed",
    "UrlPolicy",
    "UrlRefused",
    "check_url_syntax",
    "check_url_target",
    "fetch_bytes",
    "post_json",
    "resolve_and_check",
    "resolving_with",
    "system_resolve",
]

MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NOT_ALLOWED = "private targets are not allowed"
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
# "metadata" alone is included because GCE's resolver answers the short name too.
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# The body we hand back is already decoded, so the framing headers of the wire body would lie.
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})
_MAX_ERROR_DETAIL = 200


class UrlRefused(Exception):
    """The URL points somewhere the policy forbids; `reason` is safe to show to the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FetchFailed(Exception):
    """Transport error, timeout, non-2xx status or oversized body.

    The message names the host but never the full URL: presigned URLs carry secrets in
    their query string, and these messages end up in job errors shown to users.
    """


@dataclass(frozen=True)
class UrlPolicy:
    allow_private: bool = False
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 15.0
    allowed_schemes: frozenset[str] = frozenset({"http", "https"})
    # Host names and networks the operator lets through although they are not public.
    allowlist: tuple[str, ...] = ()

    def allows_host(self, host: str) -> bool:
        return host in self.allowlist

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in _networks(self.allowlist))


@functools.cache
def _networks(
    allowlist: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    found = []
    for entry in allowlist:
        try:
            found.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue  # a host name
    return tuple(found)


def check_url_syntax(url: str, policy: UrlPolicy) -> None:
    """Static checks only (no DNS), cheap enough to run while validating a request."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"URL is longer than {MAX_URL_LENGTH} characters")
    if not url.isascii():
        raise UrlRefused("URL must be ASCII: percent-encode the path and punycode the host")
    parsed = _parse(url)
    if parsed.scheme not in policy.allowed_schemes:
        allowed = ", ".join(sorted(policy.allowed_schemes))
        raise UrlRefused(f"scheme {parsed.scheme!r} is not allowed; use one of: {allowed}")
    if parsed.userinfo:
        raise UrlRefused("credentials in the URL (user:password@) are not allowed")
    host = _host(parsed)
    if policy.allow_private or policy.allows_host(host):
        return
    _check_host_name(host)
    literal = _ip_literal(host)
    if literal is not None and not policy.allows_address(literal):
        kind = _forbidden_kind(literal)
        if kind is not None:
            raise UrlRefused(f"address {host} is {kind}; {_NOT_ALLOWED}")


async def resolve_and_check(url: str, policy: UrlPolicy) -> list[str]:
    """Resolve the URL's host and return its addresses, refusing if any one is forbidden.

    Every answer is checked, not just the first, because a resolver returning a public and a
    private address lets the connect step pick the private one.
    """
    check_url_syntax(url, policy)
    parsed = _parse(url)
    host = _host(parsed)
    port = parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 443)
    try:
        addresses = await _resolver(host, port)
    except (OSError, UnicodeError):
        raise FetchFailed(f"could not resolve host {host}") from None
    if not addresses:
        raise FetchFailed(f"host {host} has no addresses")
    if not policy.allow_private and not policy.allows_host(host):
        for address in addresses:
            parsed_address = ipaddress.ip_address(address)
            if policy.allows_address(parsed_address):
                continue
            kind = _forbidden_kind(parsed_address)
            if kind is not None:
                raise UrlRefused(
                    f"host {host} resolves to {address}, which is {kind}; {_NOT_ALLOWED}"
                )
    return addresses


async def check_url_target(url: str, policy: UrlPolicy, *, timeout_s: float) -> None:
    """Refuse a URL whose host is, or resolves to, a forbidden address, within `timeout_s`.

    For checks at request time: a name that cannot be resolved in time is let through (the
    fetch decides later), a name that resolves to a forbidden address is refused now.
    Raises UrlRefused.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await resolve_and_check(url, policy)
    except (TimeoutError, FetchFailed):
        return


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host`, in its order."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


Resolver = Callable[[str, int], Awaitable[list[str]]]
_resolver: Resolver = system_resolve


@contextmanager
def resolving_with(resolver: Resolver) -> Iterator[None]:
    """Answer name lookups with `resolver` meanwhile. DNS is the one outside system whose
    answers a test cannot otherwise choose (a name that changes address between checks)."""
    global _resolver
    previous, _resolver = _resolver, resolver
    try:
        yield
    finally:
        _resolver = previous


async def fetch_bytes(
    client: httpx.AsyncClient, url: str, policy: UrlPolicy
) -> tuple[bytes, str | None]:
    """GET a user-supplied URL within the policy; returns (body, content-type)."""
    check_url_syntax(url, policy)
    host = _host(_parse(url))
    try:
        async with asyncio.timeout(policy.timeout_s):
            addresses = await resolve_and_check(url, policy)
            # Image bodies are already compressed; asking for identity keeps a small gzip
            # "bomb" from inflating far past max_bytes inside a single decoded chunk.
            headers = {"Accept-Encoding": "identity"}
            response = await _send_pinned(client, "GET", url, addresses, policy, headers=headers)
            try:
                _require_success(response, host)
                _check_declared_length(response, policy.max_bytes, host)
                body, truncated = await _read_up_to(response, policy.max_bytes)
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        raise FetchFailed(f"request to {host} timed out after {policy.timeout_s:g}s") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise FetchFailed(_transport_message(host, exc)) from None
    if truncated:
        raise FetchFailed(f"response from {host} is larger than {policy.max_bytes} bytes")
    return body, response.headers.get("content-type")


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    policy: UrlPolicy,
) -> httpx.Response:
    """POST a webhook body within the policy and return the (already read) response.

    Any status, 3xx included, is returned for the caller to judge; only transport errors and
    timeouts raise FetchFailed. An oversized response body is cut at max_bytes instead of
    failing, because the delivery itself succeeded and failing would trigger re-deliveries.
    """
    check_url_syntax(url, policy)
    host = _host(_parse(url))
    merged = {"Content-Type": "application/json", **headers}
    try:
        async with asyncio.timeout(policy.timeout_s):
            addresses = await resolve_and_check(url, policy)
            response = await _send_pinned(
                client, "POST", url, addresses, policy, headers=merged, content=body
            )
            try:
                content, _ = await _read_up_to(response, policy.max_bytes)
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        raise FetchFailed(f"request to {host} timed out after {policy.timeout_s:g}s") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise FetchFailed(_transport_message(host, exc)) from None
    kept = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _WIRE_HEADERS]
    return httpx.Response(
        response.status_code, headers=kept, content=content, request=response.request
    )


# --- address classification -------------------------------------------------------------


def _forbidden_kind(address: IPAddress) -> str | None:
    """Why an address must not be contacted, or None when it is a public address."""
    if address in _METADATA_ADDRESSES:
        return "a cloud metadata endpoint"
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return _forbidden_kind(embedded)
    checks: tuple[tuple[bool, str], ...] = (
        (address.is_loopback, "loopback"),
        (address.is_unspecified, "unspecified"),
        (address.is_link_local, "link-local"),
        (address.version == 4 and address in _CGNAT, "carrier-grade NAT"),
        (address.is_multicast, "multicast"),
        # Before is_private, which also covers 240.0.0.0/4 and would misname it.
        (address.is_reserved, "reserved"),
        (address.is_private, "private"),
    )
    for matched, kind in checks:
        if matched:
            return kind
    # Catch-all for special-purpose ranges the named checks miss (documentation, benchmarking).
    return None if address.is_global else "not globally routable"


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """IPv4 address tunnelled inside an IPv6 one, which reaches the same IPv4 host."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    return address.teredo[1] if address.teredo is not None else None


def _check_host_name(host: str) -> None:
    if host in _METADATA_HOSTS:
        raise UrlRefused(f"host {host} is a cloud metadata endpoint; {_NOT_ALLOWED}")
    # RFC 6761 reserves these names for loopback, whatever the resolver says.
    if host == "localhost" or host.endswith(".localhost"):
        raise UrlRefused(f"host {host} is loopback; {_NOT_ALLOWED}")


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # getaddrinfo accepts legacy IPv4 spellings ("127.1", "2130706433", "0x7f.0.0.1") via
    # inet_aton; catching them here refuses them at request time instead of after DNS.
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


# --- request plumbing ---------------------------------------------------------------------


def _parse(url: str) -> httpx.URL:
    # The same parser as the HTTP client, so the check and the request cannot disagree
    # about which host a tricky URL names.
    try:
        return httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise UrlRefused("URL is not valid") from None


def _host(parsed: httpx.URL) -> str:
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    if not host:
        raise UrlRefused("URL has no host")
    return host


async def _send_pinned(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    addresses: list[str],
    policy: UrlPolicy,
    *,
    headers: dict[str, str],
    content: bytes | None = None,
) -> httpx.Response:
    """Send to an already vetted address instead of letting the client resolve the host again.

    Why per-request pinning rather than a custom transport: callers share an ordinary
    AsyncClient, and a second resolution at connect time would reopen the DNS-rebinding
    window (public answer for the check, 127.0.0.1 for the connect). The URL's host is
    replaced by the vetted IP, the original Host header is kept, and httpcore's
    `sni_hostname` extension makes TLS send SNI for, and verify the certificate against, the
    real hostname. `Connection: close` stops the pool from reusing a TLS connection that was
    verified for another hostname on the same IP, which would skip that check.
    """
    original = httpx.URL(url)
    host = _host(original)
    request_headers = {
        **headers,
        "Host": original.netloc.decode("ascii"),
        "Connection": "close",
    }
    last_error: httpx.ConnectError | None = None
    for address in addresses:
        request = client.build_request(
            method,
            original.copy_with(host=address),
            headers=request_headers,
            content=content,
            timeout=httpx.Timeout(policy.timeout_s),
            extensions={"sni_hostname": host},
        )
        try:
            return await client.send(request, stream=True, follow_redirects=False)
        except httpx.ConnectError as exc:
            # Dual-stack hosts often publish an address that is unreachable from here.
            last_error = exc
    if last_error is None:
        raise FetchFailed(f"no address to connect to for {host}")
    raise last_error


def _require_success(response: httpx.Response, host: str) -> None:
    status = response.status_code
    if 300 <= status < 400:
        raise FetchFailed(f"{host} answered with a redirect (HTTP {status}); redirects are refused")
    if not 200 <= status < 300:
        raise FetchFailed(f"{host} answered with HTTP {status}")


def _check_declared_length(response: httpx.Response, limit: int, host: str) -> None:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FetchFailed(f"response from {host} is {declared} bytes; the limit is {limit}")


async def _read_up_to(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Read at most `limit` decoded bytes; the flag says whether more were on the way."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        if size + len(chunk) > limit:
            chunks.append(chunk[: limit - size])
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


def _transport_message(host: str, exc: Exception) -> str:
    detail = str(exc).strip()[:_MAX_ERROR_DETAIL]
    name = type(exc).__name__
    return (
        f"request to {host} failed: {name}: {detail}"
        if detail
        else f"request to {host} failed: {name}"
    )
