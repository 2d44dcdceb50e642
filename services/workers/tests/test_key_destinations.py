"""The second check of issue 15, item 1: a worker never sends a provider key to an origin that
is neither the provider's own endpoint nor one an operator approved, whatever the task's profile
says (profiles refuses such a profile; this holds for one saved before, or a forged task)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from atelier_contracts.errors import ErrorClass
from atelier_contracts.generation import GenerationFailed, GenerationTask
from atelier_contracts.profiles import CredentialQuery, CredentialReply
from atelier_contracts.providers import PROVIDER_BASE_URLS
from atelier_contracts.testing import generation_task, profile_snapshot
from atelier_fakes import run_fake_in_thread
from atelier_workers.adapters import ImageRequest, get_adapter
from atelier_workers.adapters._http import HttpAdapter
from atelier_workers.credentials import ProviderCredentials
from atelier_workers.service import WorkerService
from atelier_workers.settings import Settings

KEY = "sk-env-key-0123456789abcdef"


class Collector:
    """A server that would love to receive the key: records what reaches it, answers 401."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT"])
        async def anything(request: Request, path: str) -> Response:
            self.received.append(dict(request.headers))
            return Response(status_code=401, content=b'{"error": {"message": "nope"}}')

        return app


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[str, Collector]]:
    state = Collector()
    url, stop = run_fake_in_thread(state.app())
    try:
        yield url, state
    finally:
        stop()


def task(base_url: str | None, provider: str = "openai") -> GenerationTask:
    profile = profile_snapshot(
        name="Exfiltration", provider=provider, model="gpt-image-1", base_url=base_url
    )
    return generation_task(profile=profile, prompt="An owl")


def profiles_allowing(*origins: str) -> ProviderCredentials:
    async def ask(query: CredentialQuery) -> CredentialReply:
        # No stored key: the worker's own; the deployment's origins come with the answer.
        return CredentialReply(provider=query.provider, configured=False, allowed_origins=origins)

    return ProviderCredentials("openai", ask=ask, transport_key="t", fallback=KEY)


def worker(
    client: httpx.AsyncClient, credentials: ProviderCredentials, **kw: object
) -> WorkerService:
    return WorkerService(
        get_adapter("openai"),
        store=None,  # type: ignore[arg-type]  # nothing lands: no image ever comes back here
        staging_bucket="staging",
        media_bucket="media",
        client=client,
        api_key=KEY,
        credentials=credentials,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("suffix", "reason"),
    [("/v1", "is a loopback address"), ("", "is a loopback address")],
)
async def test_the_key_is_never_sent_to_an_origin_no_operator_approved(
    collector: tuple[str, Collector], suffix: str, reason: str
) -> None:
    url, state = collector
    state.received.clear()
    async with httpx.AsyncClient(trust_env=False) as client:
        outcome = await worker(client, profiles_allowing()).run_task(task(url + suffix))
    assert isinstance(outcome, GenerationFailed)
    assert outcome.error.error_class is ErrorClass.INVALID_REQUEST
    assert reason in (outcome.error.detail or "")
    assert "the key was not sent" in (outcome.error.detail or "")
    assert KEY not in outcome.model_dump_json()
    assert state.received == []  # nothing at all reached it


@pytest.mark.parametrize(
    "base_url",
    [
        "http://169.254.169.254/latest",
        "http://[2002:a9fe:a9fe::]/",
        "https://collector.example/v1",
        "http://api.openai.com/v1",  # the right host over plain http: another origin
    ],
)
async def test_other_forbidden_targets_are_refused_before_any_connection(base_url: str) -> None:
    def no_network(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"a request was sent to {request.url}")

    async with httpx.AsyncClient(transport=httpx.MockTransport(no_network)) as client:
        outcome = await worker(client, profiles_allowing()).run_task(task(base_url))
    assert isinstance(outcome, GenerationFailed)
    assert outcome.error.error_class is ErrorClass.INVALID_REQUEST


async def test_an_origin_an_operator_approved_gets_the_key(
    collector: tuple[str, Collector],
) -> None:
    url, state = collector
    state.received.clear()
    async with httpx.AsyncClient(trust_env=False) as client:
        outcome = await worker(client, profiles_allowing(url)).run_task(task(f"{url}/v1"))
    assert isinstance(outcome, GenerationFailed)
    assert outcome.error.error_class is ErrorClass.AUTH  # the collector's 401: it was asked
    assert [headers["authorization"] for headers in state.received] == [f"Bearer {KEY}"]


async def test_the_workers_own_list_approves_origins_too(
    collector: tuple[str, Collector],
) -> None:
    url, state = collector
    state.received.clear()
    settings = Settings(allowed_base_url_origins=[f"{url}/"])
    async with httpx.AsyncClient(trust_env=False) as client:
        service = worker(
            client,
            profiles_allowing(),
            allowed_origins=frozenset(settings.allowed_base_url_origins),
        )
        await service.run_task(task(f"{url}/v1"))
    assert len(state.received) == 1


async def test_the_providers_own_endpoint_is_always_approved() -> None:
    async with httpx.AsyncClient() as client:
        service = worker(client, profiles_allowing())
        await service.refresh_api_key()
        assert service.key_destination_refused(task(None)) is None
        assert service.key_destination_refused(task(PROVIDER_BASE_URLS["openai"])) is None


async def test_without_a_key_nothing_is_withheld() -> None:
    async def ask(query: CredentialQuery) -> CredentialReply:
        return CredentialReply(provider=query.provider, configured=False)

    async with httpx.AsyncClient() as client:
        service = WorkerService(
            get_adapter("openai"),
            store=None,  # type: ignore[arg-type]
            staging_bucket="staging",
            media_bucket="media",
            client=client,
            credentials=ProviderCredentials("openai", ask=ask, transport_key="t"),
        )
        await service.refresh_api_key()
        assert service.key_destination_refused(task("http://127.0.0.1:1/v1")) is None


def test_every_adapter_defaults_to_the_endpoint_profiles_knows() -> None:
    request = ImageRequest(model="m", prompt="p", size="64x64")
    for provider, url in PROVIDER_BASE_URLS.items():
        adapter = get_adapter(provider)
        assert isinstance(adapter, HttpAdapter), provider
        assert adapter.base_url(request) == url, provider
