"""Fetching a URL a writer chose (or POSTing to one an operator registered: webhooks) without
letting it aim Atelier at its own network (SSRF).

Why hand-written, and what it guards against: docs/adr/0007-ssrf-guard.md. In short:

- The host is resolved once and every address it resolves to is checked; loopback, private,
  link-local, multicast, reserved, unspecified, other non-public and cloud-metadata addresses are
  refused unless the allow-list names them (metadata addresses only by an exact, single-address
  entry: a broad CIDR never unlocks them).
- The connection goes to the address that was checked (`PinnedTransport`): there is no second
  DNS lookup for a rebinding server to answer differently. The URL, and so the `Host` header, the
  TLS SNI and the certificate check, keep the original host name.
- Redirects are followed by hand, at most `max_redirects`, and every hop is checked again.
- https only; plain http only to allow-listed addresses (internal hosts an operator trusts).
- No proxies from the environment, no credentials in URLs, a time limit over the whole fetch and
  a byte limit enforced while streaming (and up front from `Content-Length`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import certifi
import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

# Instance-metadata services hand out cloud credentials. Most sit in link-local or private space
# (refused anyway), but Azure's wire server and Alibaba's are outside it, so all are named.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task credentials
        "169.254.169.253",  # AWS DNS
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server
    )
)

_ACCEPT = "image/png, image/jpeg, image/webp;q=0.9, */*;q=0.1"


class FetchError(Exception):
    """A URL was not fetched; `reason` is written for the writer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AddressRefused(FetchError):
    """The guard said no: the address (or a redirect's) is not one Atelier may reach."""


class TooLarge(FetchError):
    """More bytes than allowed."""


class Unreachable(FetchError):
    """The address was allowed but the fetch did not work (DNS, connection, status, time)."""


_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Allow-list entries; IPv4 written as IPv6 (`::ffff:10.0.0.0/104`) is read as IPv4."""
    networks: list[IPNetwork] = []
    for entry in entries:
        network = ipaddress.ip_network(entry.strip(), strict=False)
        if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
            mapped = network.network_address.ipv4_mapped
            assert mapped is not None
            network = ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
        networks.append(network)
    return tuple(networks)


@dataclass(frozen=True)
class FetchPolicy:
    allow: tuple[IPNetwork, ...] = ()
    max_bytes: int = 10 * 1024 * 1024
    timeout_s: float = 10.0
    max_redirects: int = 3

    def allow_listed(self, ip: IPAddress) -> bool:
        candidates = _forms_of(ip)
        if _is_metadata(ip):
            return any(
                net.num_addresses == 1 and candidate in net
                for net in self.allow
                for candidate in candidates
            )
        return any(candidate in net for net in self.allow for candidate in candidates)

    def refusal(self, ip: IPAddress) -> str | None:
        """Why `ip` may not be reached, as words for the writer; None when it may."""
        if self.allow_listed(ip):
            return None
        return _kind_of(ip)


def _forms_of(ip: IPAddress) -> tuple[IPAddress, ...]:
    """What an allow-list entry may match: the address and, for IPv4 written as IPv6
    (`::ffff:127.0.0.1`, which a dual-stack socket connects to as 127.0.0.1), that IPv4.

    The other IPv4-embedding forms (6to4, NAT64, Teredo...) reach the IPv4 address only through
    a translator, so an IPv4 entry does not unlock them; their IPv6 form can be listed.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped, ip)
    return (ip,)


def _is_metadata(ip: IPAddress) -> bool:
    return ip in METADATA_ADDRESSES or any(v4 in METADATA_ADDRESSES for v4 in embedded_ipv4(ip))


def _net(text: str) -> IPNetwork:
    return ipaddress.ip_network(text)


_IPV4_COMPATIBLE = _net("::/96")  # deprecated (RFC 4291), but routed to the IPv4 by some stacks
_SIX_TO_FOUR = _net("2002::/16")  # RFC 3056: the IPv4 in bits 16-47
_TEREDO = _net("2001::/32")  # RFC 4380: the client is the bitwise NOT of the last 32 bits
_NAT64_WELL_KNOWN = _net("64:ff9b::/96")  # RFC 6052: the IPv4 in the last 32 bits
_NAT64_LOCAL_USE = _net("64:ff9b:1::/48")  # RFC 8215: prefix length chosen by the network
_LOCAL_USE_LAYOUTS = (48, 56, 64, 96)  # RFC 6052's layouts that fit inside a /48


def _bits(value: int, start: int, length: int) -> int:
    """`length` bits of a 128-bit address from bit `start` (0 = the most significant)."""
    return (value >> (128 - start - length)) & ((1 << length) - 1)


def _rfc6052_ipv4(value: int, prefix_length: int) -> ipaddress.IPv4Address | None:
    """The IPv4 an RFC 6052 address with this prefix length carries; None when the address
    cannot be one (the `u` octet, bits 64-71, or the suffix after the IPv4 is not zero)."""
    if prefix_length == 96:
        return ipaddress.IPv4Address(_bits(value, 96, 32))
    high = 64 - prefix_length  # IPv4 bits before the `u` octet
    low = 32 - high
    if _bits(value, 64, 8) or _bits(value, 72 + low, 56 - low):
        return None
    return ipaddress.IPv4Address(_bits(value, prefix_length, high) << low | _bits(value, 72, low))


def embedded_ipv4(ip: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address stands for or is routed to, if it embeds any.

    IPv4-mapped, IPv4-compatible (except `::` and `::1`), 6to4, Teredo (the client) and NAT64
    (the well-known prefix; for the local-use prefix every layout the address is consistent with,
    since its length is the network's choice).
    """
    if not isinstance(ip, ipaddress.IPv6Address):
        return ()
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return (ip.teredo[1],)
    value = int(ip)
    if ip in _NAT64_WELL_KNOWN or (ip in _IPV4_COMPATIBLE and value > 1):
        return (ipaddress.IPv4Address(value & 0xFFFFFFFF),)
    if ip in _NAT64_LOCAL_USE:
        layouts = (_rfc6052_ipv4(value, length) for length in _LOCAL_USE_LAYOUTS)
        return tuple(dict.fromkeys(v4 for v4 in layouts if v4 is not None))
    return ()


# Address classes named explicitly rather than left to `ipaddress`, whose answers differ between
# Python versions (3.11 calls site-local, 3fff::/20 and 192.0.0.0/24 global). First match wins.
_CLASSES: tuple[tuple[IPNetwork, str], ...] = tuple(
    (_net(network), kind)
    for network, kind in (
        ("0.0.0.0/32", "an unspecified address"),
        ("::/128", "an unspecified address"),
        ("0.0.0.0/8", "a non-public address"),  # "this network": 0.x reaches the host itself
        ("127.0.0.0/8", "a loopback address"),
        ("::1/128", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("10.0.0.0/8", "a private address"),
        ("172.16.0.0/12", "a private address"),
        ("192.168.0.0/16", "a private address"),
        ("fc00::/7", "a private address"),  # unique local
        ("100.64.0.0/10", "a non-public address"),  # shared address space (carrier-grade NAT)
        ("192.0.0.0/24", "a non-public address"),  # IETF protocol assignments
        ("198.18.0.0/15", "a non-public address"),  # benchmarking
        ("192.88.99.0/24", "a non-public address"),  # 6to4 relay anycast (deprecated)
        ("100::/64", "a non-public address"),  # discard-only
        ("2001::/23", "a non-public address"),  # IETF protocol assignments
        ("192.0.2.0/24", "a documentation address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("2001:db8::/32", "a documentation address"),
        ("3fff::/20", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("ff00::/8", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),  # and 255.255.255.255, the broadcast address
    )
)


def _kind_of(ip: IPAddress) -> str | None:
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    embedded = embedded_ipv4(ip)
    if embedded:
        # Judged by the IPv4 it leads to: `2002:7f00:1::` is loopback, `::ffff:8.8.8.8` public.
        return next((kind for v4 in embedded if (kind := _kind_of(v4)) is not None), None)
    for network, kind in _CLASSES:
        if ip in network:
            return kind
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "a non-public address"
    return None


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The machine's own resolver, once; every address it gives is checked."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if ip not in addresses:
            addresses.append(ip)
    return addresses


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the checked address, whatever name the request carries."""

    def __init__(self, host: str, ip: IPAddress) -> None:
        self._host = host
        self._ip = str(ip)
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if host.lower() != self._host.lower():  # never: one transport serves one checked host
            raise httpcore.ConnectError(f"refusing to connect to unchecked host {host!r}")
        return await self._inner.connect_tcp(
            self._ip,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are never used for fetched URLs")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose every connection goes to one already-checked IP address.

    TLS still verifies the certificate against the URL's host name (sent as SNI), so pinning the
    address does not weaken https.
    """

    def __init__(self, host: str, ip: IPAddress, *, ssl_context: ssl.SSLContext) -> None:
        super().__init__(trust_env=False)
        # httpx has no public hook for the network backend; its pool is built the same way,
        # with ours swapped in.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=1,
            network_backend=_PinnedBackend(host, ip),
        )


def default_ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certifi.where())


@dataclass(frozen=True)
class Fetched:
    data: bytes = field(repr=False)
    content_type: str | None
    url: str  # after redirects


# How much of an answer to a POST is kept (for the record of a delivery attempt).
_ANSWER_KEPT = 500


@dataclass(frozen=True)
class Posted:
    status_code: int
    body: str  # its first `_ANSWER_KEPT` bytes, as text


async def read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """The body, refusing (without reading on) once it passes `max_bytes`."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(_too_large(int(declared), max_bytes))
    chunks: list[bytes] = []
    received = 0
    async for chunk in response.aiter_bytes():
        received += len(chunk)
        if received > max_bytes:
            raise TooLarge(_too_large(received, max_bytes, at_least=True))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int, *, at_least: bool = False) -> str:
    mb = 1024 * 1024
    more = "more than " if at_least else ""
    return (
        f"The image is too big: {more}{size / mb:.1f} MB, and at most {limit / mb:.1f} MB "
        "is accepted."
    )


class GuardedFetcher:
    """GETs untrusted URLs under a `FetchPolicy`."""

    def __init__(
        self,
        policy: FetchPolicy,
        *,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self._resolve = resolver
        self._ssl_context = ssl_context or default_ssl_context()

    async def fetch(self, url: str) -> Fetched:
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                return await self._follow(url)
        except TimeoutError as exc:
            raise Unreachable(
                f"The address did not answer within {self.policy.timeout_s:g} seconds."
            ) from exc

    async def _follow(self, url: str) -> Fetched:
        try:
            current = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise AddressRefused("This is not a valid web address.") from exc
        for hop in range(self.policy.max_redirects + 1):
            ip = await self._checked_address(current, redirected=hop > 0)
            transport = PinnedTransport(current.host, ip, ssl_context=self._ssl_context)
            async with httpx.AsyncClient(
                transport=transport,
                trust_env=False,
                follow_redirects=False,
                timeout=self.policy.timeout_s,
            ) as client:
                try:
                    async with client.stream(
                        "GET", current, headers={"Accept": _ACCEPT}
                    ) as response:
                        if response.is_redirect:
                            location = response.headers["location"]
                            try:
                                current = current.join(location)
                            except httpx.InvalidURL as exc:
                                raise Unreachable(
                                    "The address redirects to an invalid web address."
                                ) from exc
                            continue
                        if response.status_code != 200:
                            raise Unreachable(
                                f"The address answered HTTP {response.status_code} instead of "
                                "an image."
                            )
                        data = await read_capped(response, self.policy.max_bytes)
                        return Fetched(data, response.headers.get("content-type"), str(current))
                except httpx.HTTPError as exc:
                    raise Unreachable(
                        f"The address could not be reached ({type(exc).__name__})."
                    ) from exc
        raise AddressRefused(
            f"The address redirects more than {self.policy.max_redirects} times; it was not "
            "followed further."
        )

    async def post(self, url: str, content: bytes, headers: dict[str, str]) -> Posted:
        """POST `content` to `url` under the same checks as a fetch (a webhook delivery). A
        redirect is not followed: it comes back as the answer, as any other status does; only
        an address refused or unreachable raises."""
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise AddressRefused("This is not a valid web address.") from exc
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                ip = await self._checked_address(target, redirected=False)
                transport = PinnedTransport(target.host, ip, ssl_context=self._ssl_context)
                async with (
                    httpx.AsyncClient(
                        transport=transport,
                        trust_env=False,
                        follow_redirects=False,
                        timeout=self.policy.timeout_s,
                    ) as client,
                    client.stream("POST", target, content=content, headers=headers) as response,
                ):
                    try:
                        body = await read_capped(response, self.policy.max_bytes)
                    except TooLarge:
                        body = b""
                    return Posted(
                        response.status_code, body[:_ANSWER_KEPT].decode(errors="replace")
                    )
        except TimeoutError as exc:
            raise Unreachable(
                f"The address did not answer within {self.policy.timeout_s:g} seconds."
            ) from exc
        except httpx.HTTPError as exc:
            raise Unreachable(f"The address could not be reached ({type(exc).__name__}).") from exc

    async def _checked_address(self, url: httpx.URL, *, redirected: bool) -> IPAddress:
        """Resolve once and check every answer; the first one is what we connect to."""
        prefix = "The address redirects to one that" if redirected else "The address"
        if url.scheme not in ("http", "https"):
            raise AddressRefused(f"{prefix} is not a web address (only https is fetched).")
        if not url.host:
            raise AddressRefused(f"{prefix} has no host name.")
        if url.userinfo:
            raise AddressRefused(f"{prefix} carries a user name or password; it is not fetched.")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = await self._resolve(url.host, port)
        except (OSError, UnicodeError) as exc:
            raise Unreachable(f"{prefix} has a host name that does not resolve.") from exc
        if not addresses:
            raise Unreachable(f"{prefix} has a host name that does not resolve.")
        for ip in addresses:
            refusal = self.policy.refusal(ip)
            if refusal is not None:
                raise AddressRefused(f"{prefix} points to {refusal}, which Atelier does not fetch.")
        ip = addresses[0]
        if url.scheme == "http" and not self.policy.allow_listed(ip):
            raise AddressRefused(f"{prefix} uses plain http; only https addresses are fetched.")
        return ip
