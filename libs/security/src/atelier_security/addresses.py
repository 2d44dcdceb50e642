"""What kind of address an IP address is: public, or loopback, private, cloud metadata...

The one classification both guards use: the SSRF guard (`ssrf`, ADR 0007) refuses to fetch from a
non-public address, and `origins` (ADR 0014) names the kind of place a provider key would go.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

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


def non_public_kind(ip: IPAddress) -> str | None:
    """What kind of non-public address `ip` is ("a loopback address", ...); None if public. An
    IPv6 address that carries IPv4 ones is judged by them, whatever its own prefix's class."""
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    embedded = embedded_ipv4(ip)
    if embedded:
        # Judged by the IPv4 it leads to: `2002:7f00:1::` is loopback, `::ffff:8.8.8.8` public.
        return next((kind for v4 in embedded if (kind := non_public_kind(v4)) is not None), None)
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


def is_metadata(ip: IPAddress) -> bool:
    """A cloud metadata address, or an IPv6 address carrying one."""
    return ip in METADATA_ADDRESSES or any(v4 in METADATA_ADDRESSES for v4 in embedded_ipv4(ip))
