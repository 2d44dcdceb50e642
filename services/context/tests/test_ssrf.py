"""The SSRF guard against a real HTTP server on 127.0.0.1 (loopback: refused unless listed).

Addresses that must be refused are never connected to: they are refused when resolved, so these
tests send traffic only to the local server.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import pytest

from atelier_security.ssrf import (
    AddressRefused,
    FetchError,
    FetchPolicy,
    GuardedFetcher,
    IPAddress,
    TooLarge,
    Unreachable,
    parse_networks,
)

LOOPBACK = parse_networks(["127.0.0.1"])


def _resolver(table: dict[str, list[str]], calls: list[str] | None = None) -> Any:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ipaddress.ip_address(a) for a in table[host]]

    return resolve


async def _refused(fetcher: GuardedFetcher, url: str, kind: type[FetchError]) -> str:
    with pytest.raises(kind) as caught:
        await fetcher.fetch(url)
    return caught.value.reason


@pytest.fixture
def png(image_bytes: Callable[..., bytes]) -> bytes:
    return image_bytes(32, 32)


async def test_loopback_is_refused_by_default_and_never_contacted(
    web: Any, route: Any, png: bytes
) -> None:
    web.routes["/a.png"] = route(body=png)
    reason = await _refused(GuardedFetcher(FetchPolicy()), web.url("/a.png"), AddressRefused)
    assert reason == "The address points to a loopback address, which Atelier does not fetch."
    assert web.seen == []


async def test_loopback_is_fetched_when_allow_listed(web: Any, route: Any, png: bytes) -> None:
    web.routes["/a.png"] = route(body=png, headers={"Content-Type": "image/png"})
    fetched = await GuardedFetcher(FetchPolicy(allow=LOOPBACK)).fetch(web.url("/a.png"))
    assert fetched.data == png
    assert fetched.content_type == "image/png"


async def test_the_checked_address_is_the_one_connected_to(
    web: Any, route: Any, png: bytes
) -> None:
    """A made-up name resolves (once) to the local server: the request reaches it with its own
    Host header, so the connection used the checked address, not a second lookup."""
    web.routes["/a.png"] = route(body=png)
    calls: list[str] = []
    fetcher = GuardedFetcher(
        FetchPolicy(allow=LOOPBACK),
        resolver=_resolver({"pictures.example": ["127.0.0.1"]}, calls),
    )
    fetched = await fetcher.fetch(f"http://pictures.example:{web.port}/a.png")
    assert fetched.data == png
    assert calls == ["pictures.example"]
    assert web.seen[-1].host == f"pictures.example:{web.port}"


async def test_one_refused_answer_among_several_refuses_the_name() -> None:
    fetcher = GuardedFetcher(
        FetchPolicy(),
        resolver=_resolver({"mixed.example": ["93.184.216.34", "10.0.0.5"]}),
    )
    reason = await _refused(fetcher, "https://mixed.example/a.png", AddressRefused)
    assert "a private address" in reason


async def test_plain_http_only_to_allow_listed_addresses() -> None:
    fetcher = GuardedFetcher(
        FetchPolicy(), resolver=_resolver({"public.example": ["93.184.216.34"]})
    )
    reason = await _refused(fetcher, "http://public.example/a.png", AddressRefused)
    assert "plain http" in reason


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://127.0.0.1/a.png", "only https"),
        ("https://user:secret@pictures.example/a.png", "user name or password"),
        ("https:///nohost", "no host name"),
    ],
)
async def test_malformed_or_unsafe_urls_are_refused(url: str, words: str) -> None:
    fetcher = GuardedFetcher(FetchPolicy(allow=LOOPBACK), resolver=_resolver({}))
    assert words in await _refused(fetcher, url, AddressRefused)


async def test_a_name_that_does_not_resolve_is_unreachable() -> None:
    fetcher = GuardedFetcher(FetchPolicy(), resolver=_resolver({}))
    reason = await _refused(fetcher, "https://nowhere.example/a.png", Unreachable)
    assert "does not resolve" in reason


async def test_redirects_are_followed_and_checked_again(web: Any, route: Any, png: bytes) -> None:
    web.routes["/old.png"] = route(status=301, headers={"Location": "/new.png"})
    web.routes["/new.png"] = route(body=png)
    fetched = await GuardedFetcher(FetchPolicy(allow=LOOPBACK)).fetch(web.url("/old.png"))
    assert fetched.data == png
    assert fetched.url.endswith("/new.png")


@pytest.mark.parametrize(
    ("location", "allow", "kind"),
    [
        ("http://169.254.169.254/latest/meta-data/", ["127.0.0.1"], "a cloud metadata address"),
        # A broad allow-list entry never unlocks the metadata service.
        ("http://169.254.169.254/latest/meta-data/", ["127.0.0.1", "169.254.0.0/16"], "metadata"),
        ("http://10.0.0.1/admin", ["127.0.0.1"], "a private address"),
        ("http://127.0.0.2:9/", ["127.0.0.1"], "a loopback address"),
    ],
)
async def test_a_redirect_to_a_refused_address_is_refused(
    web: Any, route: Any, location: str, allow: list[str], kind: str
) -> None:
    web.routes["/r"] = route(status=302, headers={"Location": location})
    fetcher = GuardedFetcher(FetchPolicy(allow=parse_networks(allow)))
    reason = await _refused(fetcher, web.url("/r"), AddressRefused)
    assert reason.startswith("The address redirects to one that points to")
    assert kind in reason
    assert [s.path for s in web.seen] == ["/r"]


async def test_redirects_stop_after_the_maximum(web: Any, route: Any) -> None:
    for hop in range(5):
        web.routes[f"/{hop}"] = route(status=302, headers={"Location": f"/{hop + 1}"})
    fetcher = GuardedFetcher(FetchPolicy(allow=LOOPBACK, max_redirects=3))
    reason = await _refused(fetcher, web.url("/0"), AddressRefused)
    assert "more than 3 times" in reason
    assert [s.path for s in web.seen] == ["/0", "/1", "/2", "/3"]


async def test_size_is_limited_up_front_and_while_streaming(web: Any, route: Any) -> None:
    web.routes["/declared"] = route(body=b"x" * 5000)
    web.routes["/chunked"] = route(body=b"x" * 50_000, chunked=True)
    fetcher = GuardedFetcher(FetchPolicy(allow=LOOPBACK, max_bytes=4096))
    assert "too big" in await _refused(fetcher, web.url("/declared"), TooLarge)
    assert "more than" in await _refused(fetcher, web.url("/chunked"), TooLarge)


async def test_errors_and_slow_answers_are_unreachable(web: Any, route: Any) -> None:
    web.routes["/slow"] = route(body=b"late", delay_s=3)
    fetcher = GuardedFetcher(FetchPolicy(allow=LOOPBACK, timeout_s=0.5))
    assert "within 0.5 seconds" in await _refused(fetcher, web.url("/slow"), Unreachable)
    assert "HTTP 404" in await _refused(fetcher, web.url("/missing"), Unreachable)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fc00::1", "a private address"),
        ("169.254.10.10", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("224.0.0.1", "a multicast address"),
        ("0.0.0.0", "an unspecified address"),
        ("240.0.0.1", "a reserved address"),
        ("100.64.0.1", "a non-public address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("168.63.129.16", "a cloud metadata address"),
        ("0.1.2.3", "a non-public address"),  # "this network"
        ("::", "an unspecified address"),
        ("ff02::1", "a multicast address"),
        ("255.255.255.255", "a reserved address"),
        ("fd12:3456::1", "a private address"),  # unique local, fc00::/7
        ("fec0::1", "a site-local address"),
        ("100.127.255.254", "a non-public address"),  # carrier-grade NAT, 100.64.0.0/10
        ("192.0.0.8", "a non-public address"),
        ("198.18.0.1", "a non-public address"),
        ("100::1", "a non-public address"),
        ("2001:10::1", "a non-public address"),
        ("192.0.2.1", "a documentation address"),
        ("198.51.100.7", "a documentation address"),
        ("203.0.113.9", "a documentation address"),
        ("2001:db8::1", "a documentation address"),
        ("3fff::1", "a documentation address"),
        # IPv6 addresses that embed an IPv4 address are judged by the embedded one.
        ("::ffff:169.254.169.254", "a cloud metadata address"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "a private address"),
        ("::7f00:1", "a loopback address"),  # IPv4-compatible
        ("::a00:1", "a private address"),
        ("2002:7f00:1::", "a loopback address"),  # 6to4
        ("2002:a9fe:a9fe::", "a cloud metadata address"),
        ("2002:c0a8:101::", "a private address"),
        ("2002:6440:1::", "a non-public address"),
        ("64:ff9b::7f00:1", "a loopback address"),  # NAT64, well-known prefix
        ("64:ff9b::a9fe:a9fe", "a cloud metadata address"),
        ("64:ff9b:1::7f00:1", "a loopback address"),  # NAT64, local-use prefix (/96 layout)
        ("64:ff9b:1:a9fe:a9:fe00::", "a cloud metadata address"),  # (/48 layout)
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "a loopback address"),  # Teredo, client inverted
        ("2001:0:4136:e378:8000:63bf:5601:5601", "a cloud metadata address"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("2002:808:808::", None),
        ("64:ff9b::808:808", None),
        ("64:ff9b:1::808:808", None),
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None),
    ],
)
def test_address_classes(address: str, kind: str | None) -> None:
    assert FetchPolicy().refusal(ipaddress.ip_address(address)) == kind


def test_the_allow_list_unlocks_networks_but_metadata_only_by_exact_entry() -> None:
    policy = FetchPolicy(allow=parse_networks(["10.0.0.0/8", "::ffff:127.0.0.1", "169.254.0.0/16"]))
    assert policy.refusal(ipaddress.ip_address("10.20.30.40")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("169.254.1.1")) is None
    assert policy.refusal(ipaddress.ip_address("169.254.169.254")) == "a cloud metadata address"
    exact = FetchPolicy(allow=parse_networks(["169.254.169.254/32"]))
    assert exact.refusal(ipaddress.ip_address("169.254.169.254")) is None


def test_an_embedded_metadata_address_is_unlocked_only_by_its_exact_entry() -> None:
    six_to_four = ipaddress.ip_address("2002:a9fe:a9fe::")
    broad = FetchPolicy(allow=parse_networks(["2002::/16", "169.254.169.254/32"]))
    assert broad.refusal(six_to_four) == "a cloud metadata address"
    exact = FetchPolicy(allow=parse_networks(["2002:a9fe:a9fe::/128"]))
    assert exact.refusal(six_to_four) is None


def test_an_ipv4_entry_unlocks_its_mapped_form_but_not_translated_ones() -> None:
    """`::ffff:127.0.0.1` is 127.0.0.1 on a dual-stack socket; 6to4 and NAT64 forms reach it
    through a translator, so listing 127.0.0.1 does not unlock them."""
    policy = FetchPolicy(allow=LOOPBACK)
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("2002:7f00:1::")) == "a loopback address"
    assert policy.refusal(ipaddress.ip_address("64:ff9b::7f00:1")) == "a loopback address"
