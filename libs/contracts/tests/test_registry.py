"""The subject registry is the one declaration of every subject (ADR 0019): the typed names code
uses must each be declared there exactly once, and what it declares must hold together."""

from __future__ import annotations

from atelier_contracts.export import MESSAGES
from atelier_contracts.registry import CHANNELS, channel, event_models, received_by
from atelier_contracts.subjects import ALL_STREAMS, Durable, Subject


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    if p[-1] == ">":
        return len(s) >= len(p) and all(a in ("*", b) for a, b in zip(p[:-1], s, strict=False))
    return len(p) == len(s) and all(a in ("*", b) for a, b in zip(p, s, strict=True))


def test_every_subject_is_declared_once() -> None:
    for subject in Subject:
        assert channel(subject).address == subject


def test_every_durable_is_declared_once() -> None:
    durables = [r.durable for c in CHANNELS for r in c.receivers if r.durable]
    assert len(durables) == len(set(durables))
    assert {d for d in durables if "{" not in d} == {d.value for d in Durable}


def test_addresses_are_unique() -> None:
    addresses = [c.address for c in CHANNELS]
    assert len(addresses) == len(set(addresses))


def test_events_are_in_their_stream_and_requests_have_replies() -> None:
    for c in CHANNELS:
        if c.kind == "event":
            assert c.stream is not None and c.stream in ALL_STREAMS, c.address
            assert any(_matches(s, c.subject_pattern) for s in c.stream.subjects), c.address
        else:
            # Nothing stored: no stream may capture a notice or a request.
            for stream in ALL_STREAMS:
                assert not any(_matches(s, c.subject_pattern) for s in stream.subjects), c.address
        assert (c.kind == "request") == (c.reply is not None), c.address
        assert c.publishers, c.address


def test_durable_receivers_only_on_events() -> None:
    for c in CHANNELS:
        for r in c.receivers:
            if r.durable:
                assert c.kind == "event", c.address
            if c.kind == "request":
                assert r.queue and not r.durable, c.address


def test_the_export_is_derived() -> None:
    assert event_models() == MESSAGES
    assert "jobs.status" in MESSAGES and "gen.started" in MESSAGES


def test_receivers_by_service() -> None:
    dispatch = {c.address for c, _ in received_by("dispatch")}
    assert "jobs.requested" in dispatch and "gen.completed" not in dispatch
