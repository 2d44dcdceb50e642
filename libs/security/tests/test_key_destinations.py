"""Origins and the kinds of address a provider key must never be sent to unapproved."""

from __future__ import annotations

import ipaddress

import pytest

from atelier_security.origins import (
    OriginError,
    address_kind,
    host_kind,
    origin_of,
    parse_origin,
    refusal,
)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback address"),
        ("10.0.0.5", "a private address"),
        ("192.168.1.1", "a private address"),
        ("172.16.0.1", "a private address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("169.254.1.1", "a link-local address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("168.63.129.16", "a cloud metadata address"),
        ("0.0.0.0", "an unspecified address"),
        ("::1", "a loopback address"),
        ("fe80::1", "a link-local address"),
        ("fc00::1", "a private address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("fec0::1", "a site-local address"),
        ("100.64.0.1", "a non-public address"),
        # IPv4 inside IPv6: mapped, 6to4, NAT64 (well-known and local-use), Teredo, compatible.
        ("::ffff:127.0.0.1", "a loopback address (127.0.0.1, inside ::ffff:7f00:1)"),
        ("2002:7f00:1::", "a loopback address (127.0.0.1, inside 2002:7f00:1::)"),
        ("2002:a9fe:a9fe::", "a cloud metadata address (169.254.169.254, inside 2002:a9fe:a9fe::)"),
        (
            "64:ff9b::a9fe:a9fe",
            "a cloud metadata address (169.254.169.254, inside 64:ff9b::a9fe:a9fe)",
        ),
        ("64:ff9b:1::a00:5", "a private address (10.0.0.5, inside 64:ff9b:1::a00:5)"),
        ("::a00:5", "a private address (10.0.0.5, inside ::a00:5)"),
    ],
)
def test_non_public_addresses_are_named(address: str, kind: str) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2606:4700::1111", "2002:808:808::", "64:ff9b::808:808"]
)
def test_public_addresses_pass(address: str) -> None:
    assert address_kind(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("localhost", "a loopback host"),
        ("LOCALHOST.", "a loopback host"),
        ("api.localhost", "a local-network host name"),
        ("metadata.google.internal", "a cloud metadata host"),
        ("comfyui", "a local-network host name"),
        ("nas.lan", "a local-network host name"),
        ("2130706433", "a loopback address"),
        ("0x7f.1", "a loopback address"),
        ("127.1", "a loopback address"),
        (
            "[::ffff:a9fe:a9fe]",
            "a cloud metadata address (169.254.169.254, inside ::ffff:a9fe:a9fe)",
        ),
    ],
)
def test_hosts_are_judged_by_their_spelling(host: str, kind: str) -> None:
    assert host_kind(host) == kind


def test_public_names_pass() -> None:
    assert host_kind("api.openai.com") is None
    assert host_kind("3dfx.example") is None  # digits first, but a name


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://API.OpenAI.com/v1", "https://api.openai.com"),
        ("https://api.openai.com:443/v1/", "https://api.openai.com"),
        ("http://10.0.0.5:7860", "http://10.0.0.5:7860"),
        ("http://example.com.:80/x?y", "http://example.com"),
        ("http://[::FFFF:127.0.0.1]:8080/", "http://[::ffff:7f00:1]:8080"),
        ("https://Bücher.example/v1", "https://xn--bcher-kva.example"),
    ],
)
def test_origins_are_normalized(url: str, origin: str) -> None:
    assert origin_of(url) == origin


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x.com",
        "https://",
        "https://user:pw@x.com",
        "https://api.openai.com@evil.example",
        "https://x.com:99999",
        "x.com",
        "https://api.openai.com\\@evil.example/",
        "https://api.openai.com\t.evil.example/",
    ],
)
def test_not_origins(url: str) -> None:
    with pytest.raises(OriginError):
        origin_of(url)


def test_an_allowed_origin_has_no_path() -> None:
    assert parse_origin("http://10.0.0.5:7860/") == "http://10.0.0.5:7860"
    with pytest.raises(OriginError, match="no path"):
        parse_origin("http://10.0.0.5:7860/sdapi")


def test_refusal_says_why() -> None:
    allowed = {"https://api.openai.com", "http://10.0.0.5:7860"}
    assert refusal("https://api.openai.com/v1", allowed) is None
    assert refusal("http://10.0.0.5:7860/sdapi/v1", allowed) is None
    assert "cloud metadata" in (refusal("http://169.254.169.254/", allowed) or "")
    assert "loopback" in (refusal("http://127.0.0.1:9/v1", allowed) or "")
    assert "not the provider's own endpoint" in (refusal("https://evil.example/v1", allowed) or "")
    # Same host, another port or scheme: another origin.
    assert refusal("http://10.0.0.5:7861", allowed) is not None
    assert refusal("http://api.openai.com/v1", allowed) is not None
