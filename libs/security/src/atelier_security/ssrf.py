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

# IPAddress and IPNetwork are part of this module's interface (`Resolver`, `parse_networks`).
from atelier_security.addresses import IPAddress as IPAddress
from atelier_security.addresses import IPNetwork as IPNetwork
from atelier_security.addresses import is_metadata, non_public_kind

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

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
        if is_metadata(ip):
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
        return non_public_kind(ip)


def _forms_of(ip: IPAddress) -> tuple[IPAddress, ...]:
    """What an allow-list entry may match: the address and, for IPv4 written as IPv6
    (`::ffff:127.0.0.1`, which a dual-stack socket connects to as 127.0.0.1), that IPv4.

    The other IPv4-embedding forms (6to4, NAT64, Teredo...) reach the IPv4 address only through
    a translator, so an IPv4 entry does not unlock them; their IPv6 form can be listed.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped, ip)
    return (ip,)


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
