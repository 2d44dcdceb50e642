"""The worker's provider key: the admin's (sealed on NATS, opened in memory, cached, dropped on
`profiles.changed`), else its own `ATELIER_WORKERS_API_KEY`."""

from __future__ import annotations

import logging

import httpx
import pytest
from faststream.nats import NatsBroker, TestNatsBroker

from atelier_contracts.profiles import (
    CredentialQuery,
    CredentialReply,
    ProfilesChanged,
)
from atelier_contracts.subjects import Subject
from atelier_contracts.testing import generation_task, profile_snapshot
from atelier_workers.adapters.base import GenerationOutput, ImageRequest
from atelier_workers.credentials import (
    ProviderCredentials,
    SealBroken,
    TransportOpener,
)
from atelier_workers.handlers import register_credential_invalidation
from atelier_workers.service import WorkerService

# Written by atelier_profiles.crypto; services/profiles/tests/test_credentials.py seals the same.
KNOWN_ANSWER_SECRET = "known-answer-transport-secret"
KNOWN_ANSWER_SEALED = (
    "v1.AAECAwQFBgcICQoLGlyQDGvfG0iY0TlgrJ1r798Dj1HnTlJcvc3ATEBz6OAizlRvfYHoN8ZWOQPcLivO"
)
KNOWN_ANSWER_PLAINTEXT = "sk-known-answer-0123456789abcdef"


def test_opens_what_profiles_seals() -> None:
    opener = TransportOpener(KNOWN_ANSWER_SECRET)
    assert opener.open("openai", KNOWN_ANSWER_SEALED) == KNOWN_ANSWER_PLAINTEXT
    with pytest.raises(SealBroken):
        opener.open("offline", KNOWN_ANSWER_SEALED)  # bound to its provider
    with pytest.raises(SealBroken):
        TransportOpener("another secret").open("openai", KNOWN_ANSWER_SEALED)
    assert KNOWN_ANSWER_SECRET not in repr(opener)


class FakeProfiles:
    """Answers `profiles.query.credentials` like the profiles service would."""

    def __init__(self, key: str | None = KNOWN_ANSWER_PLAINTEXT) -> None:
        self.sealed = {KNOWN_ANSWER_PLAINTEXT: KNOWN_ANSWER_SEALED}
        self.key = key
        self.asked = 0
        self.down = False

    async def __call__(self, query: CredentialQuery) -> CredentialReply:
        self.asked += 1
        if self.down:
            raise TimeoutError("no answer")
        if self.key is None:
            return CredentialReply(provider=query.provider, configured=False)
        return CredentialReply(
            provider=query.provider, configured=True, sealed_key=self.sealed[self.key]
        )


def credentials_with(
    profiles: FakeProfiles, fallback: str | None = "sk-env-key"
) -> ProviderCredentials:
    return ProviderCredentials(
        "openai", ask=profiles, transport_key=KNOWN_ANSWER_SECRET, fallback=fallback
    )


async def test_the_stored_key_is_fetched_once_and_cached() -> None:
    profiles = FakeProfiles()
    credentials = credentials_with(profiles)
    assert await credentials.api_key() == KNOWN_ANSWER_PLAINTEXT
    assert await credentials.api_key() == KNOWN_ANSWER_PLAINTEXT
    assert profiles.asked == 1
    credentials.invalidate()
    profiles.key = None  # the admin deleted it
    assert await credentials.api_key() == "sk-env-key"
    assert profiles.asked == 2


async def test_no_answer_falls_back_to_the_workers_own_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    profiles = FakeProfiles()
    profiles.down = True
    now = [0.0]
    credentials = ProviderCredentials(
        "openai",
        ask=profiles,
        transport_key=KNOWN_ANSWER_SECRET,
        fallback="sk-env-key",
        retry_s=5,
        clock=lambda: now[0],
    )
    assert await credentials.api_key() == "sk-env-key"
    assert await credentials.api_key() == "sk-env-key"
    assert profiles.asked == 1  # not asked again at once
    profiles.down = False
    now[0] = 6.0
    assert await credentials.api_key() == KNOWN_ANSWER_PLAINTEXT
    assert "sk-env-key" not in caplog.text and KNOWN_ANSWER_PLAINTEXT not in caplog.text


async def test_a_transport_key_mismatch_is_logged_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    credentials = ProviderCredentials(
        "openai", ask=FakeProfiles(), transport_key="not the shared one", fallback=None
    )
    assert await credentials.api_key() is None
    assert "ATELIER_CREDENTIALS_TRANSPORT_KEY" in caplog.text
    assert KNOWN_ANSWER_SEALED not in caplog.text


async def test_profiles_changed_drops_the_cached_key() -> None:
    profiles = FakeProfiles()
    credentials = credentials_with(profiles)
    broker = NatsBroker("nats://127.0.0.1:1")
    register_credential_invalidation(broker, credentials)
    async with TestNatsBroker(broker):
        await credentials.api_key()
        # On a real server a core subscriber gets the JetStream publish too; the in-memory
        # broker delivers a stream publish to stream subscribers only, so publish it plainly.
        for event in (
            ProfilesChanged(action="updated", profile_id="p1"),
            ProfilesChanged(action="credentials", provider="offline"),
        ):
            await broker.publish(event, Subject.PROFILES_CHANGED)
        await credentials.api_key()
        assert profiles.asked == 1  # other changes keep the cache
        changed = ProfilesChanged(action="credentials", provider="openai")
        await broker.publish(changed, Subject.PROFILES_CHANGED)
        await credentials.api_key()
        assert profiles.asked == 2


class RecordingAdapter:
    name = "openai"

    def __init__(self) -> None:
        self.keys: list[str | None] = []

    def max_images_per_call(self, model: str) -> int:
        return 1

    async def generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        self.keys.append(request.api_key)
        return GenerationOutput(images=[])


async def test_each_task_uses_the_current_key() -> None:
    profiles = FakeProfiles()
    credentials = credentials_with(profiles)
    adapter = RecordingAdapter()
    async with httpx.AsyncClient() as client:
        service = WorkerService(
            adapter,
            store=None,  # type: ignore[arg-type]  # no image comes back, nothing is stored
            staging_bucket="staging",
            media_bucket="media",
            client=client,
            api_key="sk-env-key",
            credentials=credentials,
        )
        openai = profile_snapshot(name="OpenAI", provider="openai", model="gpt-image-1")
        task = generation_task(profile=openai, prompt="An owl")
        await service.run_task(task)
        credentials.invalidate()
        profiles.key = None
        await service.run_task(task)
    assert adapter.keys == [KNOWN_ANSWER_PLAINTEXT, "sk-env-key"]
    assert KNOWN_ANSWER_PLAINTEXT not in repr(service)
