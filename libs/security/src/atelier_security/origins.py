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

from atelier_security.addresses import IPAddress, embedded_ipv4, non_public_kind

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
_DEFAULT_PORTS = {"http": 80, "https": 443}


class OriginError(ValueError):
    """Not a usable origin; the message says why, for an admin."""


def address_kind(ip: IPAddress) -> str | None:
    """What kind of non-public address `ip` is ("a loopback address", ...); None if public. An
    IPv6 address that carries a non-public IPv4 one says which, as the message names it."""
    for inner in embedded_ipv4(ip):
        kind = non_public_kind(inner)
        if kind is not None:
            return f"{kind} ({inner}, inside {ip})"
    return non_public_kind(ip)


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
