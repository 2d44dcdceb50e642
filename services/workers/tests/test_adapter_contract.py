"""What every provider adapter must do, run against each provider's fake server (issue 19).

One suite, parametrised over every adapter in `ADAPTERS`: a one-image call returns one image of
the asked size whose bytes are the kind it claims; the count is held to the provider's images
per call before anything is sent; the provider's own failures (auth, rate limit, outage, content
block, invalid request: those it has) map to the shared error classes, the key never shown; an
adapter that can cancel stops a job the provider accepted; and a worker never sends the key to
an origin no operator approved. Each adapter's own module tests the rest: its wire format,
resume, progress and quirks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from adapter_support import (
    COMFYUI_NODE_MAP,
    COMFYUI_TEXT_TO_IMAGE,
    assert_classified,
    assert_key_hidden,
    failure,
    serve,
    wait_until,
)

from atelier_contracts.errors import ErrorClass
from atelier_contracts.generation import GenerationFailed, GenerationTask
from atelier_contracts.profiles import ProfileSnapshot
from atelier_contracts.providers import NETWORKLESS_PROVIDERS
from atelier_fakes import FakeOpenAIState, create_openai_fake
from atelier_fakes._common import FakeState
from atelier_fakes.bfl import FakeBFLState, create_bfl_fake
from atelier_fakes.comfyui import FakeComfyUIState, create_comfyui_fake
from atelier_fakes.falai import FakeFalState, create_falai_fake
from atelier_fakes.gemini import FakeGeminiState, create_gemini_fake
from atelier_fakes.openrouter import FakeOpenRouterState, create_openrouter_fake
from atelier_fakes.replicate import FakeReplicateState, create_replicate_fake
from atelier_fakes.stability import FakeStabilityState, create_stability_fake
from atelier_fakes.stable_diffusion import FakeA1111State, create_stable_diffusion_fake
from atelier_fakes.workersai import FakeWorkersAIState, create_workersai_fake
from atelier_workers.adapters import ADAPTERS, ImageRequest, ProviderError, image_size_of
from atelier_workers.adapters.base import CancellableAdapter, InMemoryResumeStore, parse_size
from atelier_workers.service import WorkerService


@dataclass(frozen=True)
class Failure:
    """Request fields that make the provider fail one way, and what the error must say."""

    overrides: dict[str, Any]
    stage: str | None = None
    retry_after: float | None = None


def marker(
    provider: str, name: str, stage: str | None = None, retry: float | None = None
) -> Failure:
    """The failure the provider's fake answers to a `[provider:name]` prompt marker."""
    return Failure({"prompt": f"x [{provider}:{name}]"}, stage, retry)


@dataclass(frozen=True)
class Case:
    """One adapter, its fake server and how to make that provider do each thing."""

    provider: str
    # ImageRequest fields of a one-image call that works (base_url aside); `size` is one the
    # provider makes exactly (ratio providers: a size of one of their ratios).
    request: dict[str, Any]
    failures: dict[ErrorClass, Failure]
    # The fake: a `(base_url, state)` generator (`adapter_support.serve`); None: no network.
    server: Callable[[], Iterator[tuple[str, Any]]] | None = None
    # Fake settings that keep a job running long enough to cancel it, and when it has started.
    slow: dict[str, float] = field(default_factory=dict)
    started: Callable[[Any, InMemoryResumeStore], bool] | None = None


def _handle_saved(state: Any, store: InMemoryResumeStore) -> bool:
    return bool(store.handle)


def _offline_failure(error_class: ErrorClass, stage: str | None = None) -> Failure:
    retry = 1.0 if error_class is ErrorClass.RATE_LIMITED else None
    return Failure({"prompt": f"x [fail:{error_class.value}]"}, stage, retry)


KEYS = {
    "openai": "sk-test-atelier-contract-0123456789abcdef",
    "openrouter": "sk-or-v1-test-atelier-contract-0123456789",
    "gemini": "AIzaSyTest-atelier-contract-0123456789ab",
    "stability": "sk-test-stability-contract-0123456789ab",
    "bfl": "bfl-test-key-contract-0123456789abcdef",
    "workersai": "cf-test-token-contract-0123456789abcdefg",
    "falai": "fal-test-key-id:contract-0123456789abcdef",
    "replicate": "r8_test_token_contract_0123456789abcdef",
    "comfyui": "comfyui-proxy-token-contract-0123456789",
    "stable-diffusion": "atelier:a1111-contract-pass-0123456789",
}
ACCOUNT = "feedfacefeedfacefeedfacefeedface"
AUTH, RATE, DOWN = ErrorClass.AUTH, ErrorClass.RATE_LIMITED, ErrorClass.PROVIDER_UNAVAILABLE
BLOCKED, INVALID = ErrorClass.CONTENT_BLOCKED, ErrorClass.INVALID_REQUEST

CASES: dict[str, Case] = {
    "offline": Case(
        "offline",
        {"model": "offline-sketch", "size": "256x192", "seed": 7},
        {
            AUTH: _offline_failure(AUTH),
            RATE: _offline_failure(RATE),
            DOWN: _offline_failure(DOWN),
            BLOCKED: _offline_failure(BLOCKED, "input"),
            INVALID: _offline_failure(INVALID),
        },
    ),
    "openai": Case(
        "openai",
        {"model": "gpt-image-1", "size": "1024x1024"},
        {
            AUTH: marker("openai", "401"),
            RATE: marker("openai", "429", retry=2.0),
            DOWN: marker("openai", "500"),
            BLOCKED: marker("openai", "moderation-input", "input"),
            INVALID: marker("openai", "bad-size"),
        },
        lambda: serve(
            create_openai_fake,
            FakeOpenAIState(api_key=KEYS["openai"], retry_after_s=2.0),
            "/v1",
        ),
    ),
    "openrouter": Case(
        "openrouter",
        {
            "model": "google/gemini-2.5-flash-image",
            "size": "1024x1024",
            "provider_config": {"api": "chat"},
        },
        {
            AUTH: marker("openrouter", "401"),
            RATE: marker("openrouter", "429", retry=2.0),
            DOWN: marker("openrouter", "500"),
            BLOCKED: marker("openrouter", "content-filter", "output"),
            INVALID: marker("openrouter", "400"),
        },
        lambda: serve(
            create_openrouter_fake,
            FakeOpenRouterState(api_key=KEYS["openrouter"], retry_after_s=2.0),
            "/api/v1",
        ),
    ),
    "gemini": Case(
        "gemini",
        {"model": "gemini-3-pro-image-preview", "size": "1024x1024"},
        {
            AUTH: marker("gemini", "403"),
            RATE: marker("gemini", "429", retry=2.0),
            DOWN: marker("gemini", "500"),
            BLOCKED: marker("gemini", "block-prompt", "input"),
            INVALID: marker("gemini", "400"),
        },
        lambda: serve(
            create_gemini_fake,
            FakeGeminiState(api_key=KEYS["gemini"], retry_delay_s=2.0),
            "/v1beta",
        ),
    ),
    "stability": Case(
        "stability",
        {"model": "core", "size": "1024x1024"},
        {
            AUTH: marker("stability", "401-echo-key"),
            RATE: marker("stability", "429-retry-after", retry=2.0),
            DOWN: marker("stability", "500"),
            BLOCKED: marker("stability", "403-moderation", "input"),
            INVALID: marker("stability", "422"),
        },
        lambda: serve(
            create_stability_fake,
            FakeStabilityState(api_key=KEYS["stability"], retry_after_s=2.0),
            "/v2beta",
        ),
    ),
    "bfl": Case(
        "bfl",
        {"model": "flux-2-pro", "size": "1024x768", "provider_config": {"poll_interval_s": 0.05}},
        {
            AUTH: marker("bfl", "401-echo-key"),
            RATE: marker("bfl", "429", retry=2.0),
            DOWN: marker("bfl", "500"),
            BLOCKED: marker("bfl", "request-moderated", "input"),
            INVALID: marker("bfl", "422"),
        },
        lambda: serve(
            create_bfl_fake,
            FakeBFLState(api_key=KEYS["bfl"], pending_s=0.1, retry_after_s=2.0),
            "/v1",
        ),
    ),
    "workersai": Case(
        "workersai",
        {
            "model": "@cf/stabilityai/stable-diffusion-xl-base-1.0",
            "size": "1024x768",
            "provider_config": {"account_id": ACCOUNT},
        },
        {
            AUTH: marker("workersai", "401-echo-key"),
            RATE: marker("workersai", "429", retry=2.0),
            DOWN: marker("workersai", "500"),
            BLOCKED: marker("workersai", "nsfw-input", "input"),
            INVALID: marker("workersai", "bad-input"),
        },
        lambda: serve(
            create_workersai_fake,
            FakeWorkersAIState(api_key=KEYS["workersai"], account_id=ACCOUNT, retry_after_s=2.0),
            "/client/v4",
        ),
    ),
    "falai": Case(
        "falai",
        {
            "model": "fal-ai/flux/dev",
            "size": "512x384",
            "provider_config": {"poll_interval_s": 0.02},
        },
        {
            AUTH: marker("falai", "401"),
            RATE: marker("falai", "429", retry=2.0),
            DOWN: marker("falai", "500"),
            BLOCKED: marker("falai", "content-policy", "input"),
            INVALID: marker("falai", "422"),
        },
        lambda: serve(
            create_falai_fake,
            FakeFalState(api_key=KEYS["falai"], queue_s=0.05, run_s=0.05),
        ),
        slow={"queue_s": 5.0},
        started=_handle_saved,
    ),
    "replicate": Case(
        "replicate",
        {
            "model": "black-forest-labs/flux-dev",
            "size": "1344x768",  # its default aspect_ratio form: 16:9
            "provider_config": {"poll_interval_s": 0.02, "prefer_wait_s": 0},
        },
        {
            AUTH: marker("replicate", "401"),
            RATE: marker("replicate", "429", retry=3.0),
            DOWN: marker("replicate", "500"),
            BLOCKED: marker("replicate", "sensitive", "input"),
            INVALID: marker("replicate", "422"),
        },
        lambda: serve(
            create_replicate_fake,
            FakeReplicateState(api_token=KEYS["replicate"], boot_s=0.05, run_s=0.05),
            "/v1",
        ),
        slow={"run_s": 5.0},
        started=_handle_saved,
    ),
    # Self-hosted servers: no rate limits or content blocks of their own; ComfyUI no auth.
    "comfyui": Case(
        "comfyui",
        {
            "model": "default",
            "size": "320x256",
            "provider_config": {
                "workflow": COMFYUI_TEXT_TO_IMAGE,
                "node_map": COMFYUI_NODE_MAP,
                "poll_interval_s": 0.05,
            },
        },
        {
            DOWN: marker("comfyui", "500"),
            INVALID: Failure({"model": "nope.safetensors"}),
        },
        lambda: serve(create_comfyui_fake, FakeComfyUIState(node_s=0.005, step_s=0.01)),
        slow={"step_s": 0.2},
        started=lambda state, store: state.running is not None and bool(store.handle),
    ),
    "stable-diffusion": Case(
        "stable-diffusion",
        {"model": "default", "size": "256x192", "provider_config": {"poll_interval_s": 0.02}},
        {
            AUTH: Failure({"api_key": "atelier:not-the-password"}),
            DOWN: marker("stable-diffusion", "oom"),
            INVALID: Failure({"options": {"sampler_name": "Nonexistent"}}),
        },
        lambda: serve(
            create_stable_diffusion_fake,
            FakeA1111State(credentials=KEYS["stable-diffusion"], step_s=0.01),
        ),
        slow={"step_s": 0.1},
        started=lambda state, store: state.job_count == 1 and bool(store.handle),
    ),
}
NETWORKED = sorted(set(CASES) - NETWORKLESS_PROVIDERS)
CANCELLABLE = sorted(name for name in CASES if isinstance(ADAPTERS[name], CancellableAdapter))
FAILURES = [(name, error_class) for name, case in CASES.items() for error_class in case.failures]


def test_every_adapter_has_a_case() -> None:
    assert set(CASES) == set(ADAPTERS)
    assert all(CASES[name].slow and CASES[name].started for name in CANCELLABLE)


@dataclass
class Served:
    """One case with its fake running (module-scoped: one server per provider)."""

    case: Case
    base_url: str | None
    state: FakeState | None

    def request(self, **overrides: Any) -> ImageRequest:
        values: dict[str, Any] = {
            "prompt": "a lighthouse on a cliff at dusk",
            "base_url": self.base_url,
            "api_key": KEYS.get(self.case.provider),
            "timeout_s": 10.0,
            **self.case.request,
        }
        return ImageRequest(**{**values, **overrides})

    def sent(self) -> int:
        """How many requests reached the fake (0 without one)."""
        return len(self.state.requests) if self.state is not None else 0


@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    case = CASES[request.param]
    if case.server is None:
        yield Served(case, None, None)
        return
    for base_url, state in case.server():  # the fake stops when this fixture is torn down
        yield Served(case, base_url, state)


@pytest.fixture
def fake(served: Served) -> Served:
    if served.state is not None:
        served.state.reset()
    return served


# --- images and counts ---------------------------------------------------------------------


@pytest.mark.parametrize("served", sorted(CASES), indirect=True)
async def test_one_image_of_the_asked_size_and_kind(
    fake: Served, client: httpx.AsyncClient
) -> None:
    request = fake.request()
    output = await ADAPTERS[fake.case.provider].generate(request, client)
    [image] = output.images
    assert (image.width, image.height) == parse_size(request.size)
    # The bytes are the image the result says they are.
    assert image_size_of(image.data) == (image.content_type, image.width, image.height)
    assert image.content_type in ("image/png", "image/jpeg", "image/webp")


@pytest.mark.parametrize("served", sorted(CASES), indirect=True)
async def test_as_many_images_as_one_call_may_make(fake: Served, client: httpx.AsyncClient) -> None:
    adapter = ADAPTERS[fake.case.provider]
    request = fake.request()
    most = adapter.max_images_per_call(request.model)
    output = await adapter.generate(fake.request(n=most), client)
    assert len(output.images) == most


@pytest.mark.parametrize("served", sorted(CASES), indirect=True)
@pytest.mark.parametrize("too_many", [0, 1])
async def test_a_count_beyond_one_call_is_refused_before_sending(
    fake: Served, client: httpx.AsyncClient, too_many: int
) -> None:
    adapter = ADAPTERS[fake.case.provider]
    model = fake.request().model
    n = adapter.max_images_per_call(model) + 1 if too_many else 0
    seen = fake.sent()  # counted from here: a late request of an earlier test may still arrive
    error = await failure(adapter, fake.request(n=n), client)
    assert error.error_class is ErrorClass.INVALID_REQUEST
    assert fake.sent() == seen


# --- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize(("served", "error_class"), FAILURES, indirect=["served"])
async def test_provider_failures_map_to_the_shared_classes(
    fake: Served, client: httpx.AsyncClient, error_class: ErrorClass
) -> None:
    expected = fake.case.failures[error_class]
    request = fake.request(**expected.overrides)
    error = await failure(ADAPTERS[fake.case.provider], request, client)
    assert_classified(error, error_class, expected.stage, expected.retry_after)
    for key in {KEYS.get(fake.case.provider), request.api_key} - {None}:
        assert key is not None
        assert_key_hidden(error, key)


# --- cancel --------------------------------------------------------------------------------


@pytest.mark.parametrize("served", CANCELLABLE, indirect=True)
async def test_cancel_stops_an_accepted_job(fake: Served, client: httpx.AsyncClient) -> None:
    adapter = ADAPTERS[fake.case.provider]
    assert isinstance(adapter, CancellableAdapter)
    state, started = fake.state, fake.case.started
    assert state is not None and started is not None
    usual = {name: getattr(state, name) for name in fake.case.slow}
    for name, value in fake.case.slow.items():
        setattr(state, name, value)
    try:
        store = InMemoryResumeStore()
        request = fake.request(resume=store)
        job = asyncio.create_task(adapter.generate(request, client))
        await wait_until(lambda: started(state, store), "the provider accepted the job")
        assert store.handle is not None
        await adapter.cancel(request, store.handle, client)
        with pytest.raises(ProviderError) as caught:
            await job
        assert caught.value.error_class is ErrorClass.CANCELLED
    finally:
        for name, value in usual.items():
            setattr(state, name, value)


# --- the key goes nowhere unapproved ---------------------------------------------------------


@pytest.mark.parametrize("provider", NETWORKED)
async def test_the_key_never_goes_to_an_origin_no_operator_approved(provider: str) -> None:
    def no_network(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"a request was sent to {request.url}")

    case = CASES[provider]
    task = GenerationTask(
        task_id="t1",
        job_id="j1",
        user_id="alice",
        project="alpha",
        profile=ProfileSnapshot(
            id="p1",
            name="Exfiltration",
            provider=provider,
            model=case.request["model"],
            timeout_s=10,
            prompt_max_length=1000,
            max_reference_images=0,
            credit_cost=1,
            base_url="https://collector.example/v1",
            provider_config=case.request.get("provider_config", {}),
        ),
        prompt="An owl",
        size=case.request["size"],
        n=1,
        first_index=0,
        deadline_at=datetime.now(UTC) + timedelta(minutes=5),
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(no_network)) as client:
        service = WorkerService(
            ADAPTERS[provider],
            store=None,  # type: ignore[arg-type]  # nothing lands: no image comes back
            staging_bucket="staging",
            media_bucket="media",
            client=client,
            api_key=KEYS[provider],
        )
        outcome = await service.run_task(task)
    assert isinstance(outcome, GenerationFailed)
    assert outcome.error.error_class is ErrorClass.INVALID_REQUEST
    assert "the key was not sent" in (outcome.error.detail or "")
    assert KEYS[provider] not in outcome.model_dump_json()
