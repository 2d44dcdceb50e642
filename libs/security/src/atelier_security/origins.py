"""Where a provider key may be sent: origins (`scheme://host[:port]`) and what kind of address a
host names.

Profiles uses it to refuse a `base_url` an operator did not approve, workers to check the target
of every keyed request again (docs/adr/0014-keys-only-to-approved-origins.md). No DNS here: a
host name is judged by its spelling (`localhost`, `*.internal`, numeric IPv4 forms); what a
public name resolves to is the operator's to trust once they approved its exact origin.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance-metadata services hand out cloud credentials. Most sit in link-local or private space,
# but Azure's wire server and Alibaba's are outside it, so all are named.
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
# Names that mean "this machine", "this cluster" or "the metadata service" wherever they resolve.
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_INTERNAL_SUFFIXES = (
    ".localhost",
    ".local",
    ".localdomain",
    ".internal",
    ".intranet",
    ".lan",
    ".home.arpa",
    ".cluster.local",
    ".svc",
)
# Non-public ranges some Python versions' `ipaddress` flags call global (3.11: site-local IPv6,
# the documentation range 3fff::/20).
_OTHER_NON_PUBLIC = (
    (ipaddress.IPv6Network("fec0::/10"), "a site-local address"),
    (ipaddress.IPv6Network("3fff::/20"), "a reserved address"),
)
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class OriginError(ValueError):
    """Not a usable origin; the message says why, for an admin."""


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, 6to4, NAT64, Teredo, IPv4-compatible):
    a request to it may well reach that IPv4 address, so it is judged as that address."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in network for network in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # `::` and `::1` are IPv6's own
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_kind(ip: IPAddress) -> str | None:
    """What kind of non-public address `ip` is ("a loopback address", ...); None if public."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        # Judged as the IPv4 address it carries, whatever the IPv6 prefix's own class says.
        kind = address_kind(inner)
        return None if kind is None else f"{kind} ({inner}, inside {ip})"
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for network, kind in _OTHER_NON_PUBLIC:
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


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # `127.1`, `0x7f.1`, `2130706433`, `017700000001`: forms inet_aton (and so many HTTP
    # clients and resolvers) read as IPv4 addresses.
    if host and all(c in "0123456789abcdefx." for c in host) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def host_kind(host: str) -> str | None:
    """What kind of non-public place `host` (an IP literal or a name) names; None if public."""
    name = host.strip().strip("[]").lower().rstrip(".")
    address = _literal_address(name)
    if address is not None:
        return address_kind(address)
    if name in METADATA_NAMES:
        return "a cloud metadata host"
    if name in _LOCAL_NAMES:
        return "a loopback host"
    if name.endswith(_INTERNAL_SUFFIXES) or "." not in name:
        return "a local-network host name"
    return None


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of an http(s) URL, normalized: lowercase, no trailing dot, the
    default port left out. Raises `OriginError` for anything else."""
    if any(c.isspace() or ord(c) < 32 or c == "\\" for c in url.strip()):
        # Parsers disagree on these (urlsplit drops tabs, some read `\` as `/`): no ambiguity.
        raise OriginError(f"{url!r} must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise OriginError(f"{url!r} is not a URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise OriginError(f"{url!r} must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise OriginError(f"{url!r} must not carry a user name or password")
    host = parts.hostname.rstrip(".")
    if not host:
        raise OriginError(f"{url!r} has no host")
    if not host.isascii():  # one spelling for international names: the one sent on the wire
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise OriginError(f"{url!r}: {host!r} is not a valid host name") from exc
    if ":" in host:  # IPv6 literal, in its one canonical spelling
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError as exc:
            raise OriginError(f"{url!r}: {host!r} is not an IPv6 address") from exc
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


# What `parse_origin` accepts, as a regular expression for an OpenAPI document (no JSON Schema
# can call it): http(s), an ASCII host name or an IPv4 or IPv6 literal, a port up to 65535, an
# optional trailing `/`. Narrower than the parser where it would have to be loose (no
# international names: give their `xn--` form), so every string it admits is accepted.
_HEX = "[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join(
    [
        f"(?:{_HEX}:){{7}}{_HEX}",
        f"(?:{_HEX}:){{1,7}}:",
        f"(?:{_HEX}:){{1,6}}:{_HEX}",
        f"(?:{_HEX}:){{1,5}}(?::{_HEX}){{1,2}}",
        f"(?:{_HEX}:){{1,4}}(?::{_HEX}){{1,3}}",
        f"(?:{_HEX}:){{1,3}}(?::{_HEX}){{1,4}}",
        f"(?:{_HEX}:){{1,2}}(?::{_HEX}){{1,5}}",
        f"{_HEX}:(?::{_HEX}){{1,6}}",
        f":(?:(?::{_HEX}){{1,7}}|:)",
    ]
)
_PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
ORIGIN_PATTERN = (
    rf"^[Hh][Tt][Tt][Pp][Ss]?://(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?|\[(?:{_IPV6})\])"
    rf"(?::{_PORT})?/?$"
)


def parse_origin(entry: str) -> str:
    """An origin an operator allows: a URL with nothing but scheme, host and port (a trailing
    `/` is tolerated). Normalized like `origin_of`; raises `OriginError`."""
    parts = urlsplit(entry.strip())
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise OriginError(
            f"{entry!r} is not an origin: give only scheme, host and port "
            "(e.g. http://10.0.0.5:7860), no path"
        )
    return origin_of(entry)


def host_of_origin(origin: str) -> str:
    return urlsplit(origin).hostname or ""


def refusal(url: str, allowed: Iterable[str]) -> str | None:
    """Why a keyed request may not go to `url`, given the origins allowed for the key (the
    provider's own endpoints and what an operator approved); None when it may."""
    try:
        origin = origin_of(url)
    except OriginError as exc:
        return str(exc)
    if origin in set(allowed):
        return None
    kind = host_kind(host_of_origin(origin))
    if kind is not None:
        return f"{origin} is {kind}, and an operator has not allowed that exact origin"
    return f"{origin} is not the provider's own endpoint, and an operator has not allowed it"
