"""The AUTOMATIC1111 adapter against the fake A1111 API, over real HTTP on a local port."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from adapter_support import ProgressLog, failure, picture, serve, wait_until

from atelier_contracts.errors import ErrorClass
from atelier_fakes.stable_diffusion import FakeA1111State, create_stable_diffusion_fake
from atelier_workers.adapters import ProviderError
from atelier_workers.adapters.base import ImageRequest, InMemoryResumeStore
from atelier_workers.adapters.stable_diffusion import StableDiffusionAdapter

ADAPTER = StableDiffusionAdapter()
CREDENTIALS = "atelier:a1111-pass-0123456789"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[str, FakeA1111State]]:
    yield from serve(create_stable_diffusion_fake, FakeA1111State())


@pytest.fixture
def fake(fake_server: tuple[str, FakeA1111State]) -> FakeA1111State:
    _, state = fake_server
    state.reset()
    state.credentials, state.step_s, state.default_steps = None, 0.01, 20
    return state


def _request(base_url: str | None, **overrides: Any) -> ImageRequest:
    values: dict[str, Any] = {
        "model": "default",
        "prompt": "a lighthouse on a cliff at dusk",
        "size": "256x192",
        "base_url": base_url,
        "timeout_s": 10.0,
        "provider_config": {"poll_interval_s": 0.02},
    }
    return ImageRequest(**{**values, **overrides})


async def _fail(request: ImageRequest, client: httpx.AsyncClient) -> ProviderError:
    return await failure(ADAPTER, request, client)


# --- success -----------------------------------------------------------------------------


async def test_txt2img_batch_reports_each_seed(
    fake: FakeA1111State, base_url: str, client: httpx.AsyncClient
) -> None:
    seen = ProgressLog()
    store = InMemoryResumeStore()
    request = _request(
        base_url,
        n=2,
        seed=42,
        negative_prompt="fog",
        model="sd_xl_base_1.0",
        options={"steps": 10, "sampler_name": "DPM++ 2M", "cfg_scale": 6, "quality": "hd"},
        resume=store,
        on_progress=seen,
    )
    output = await ADAPTER.generate(request, client)

    assert [(i.width, i.height, i.seed) for i in output.images] == [(256, 192, 42), (256, 192, 43)]
    assert all(i.content_type == "image/png" for i in output.images)
    [call] = fake.generations
    assert call.path == "/sdapi/v1/txt2img"
    assert call.body == {
        "prompt": "a lighthouse on a cliff at dusk",
        "negative_prompt": "fog",
        "seed": 42,
        "width": 256,
        "height": 192,
        "batch_size": 2,
        "n_iter": 1,
        "send_images": True,
        "save_images": False,
        "steps": 10,
        "sampler_name": "DPM++ 2M",
        "cfg_scale": 6,
        "override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0"},
    }
    assert seen and any(fraction and fraction > 0 for fraction, _ in seen)
    assert any(detail.startswith("step ") for _, detail in seen)
    assert store.handle == {}  # nothing left to interrupt


async def test_random_seed_comes_back_from_info(
    fake: FakeA1111State, base_url: str, client: httpx.AsyncClient
) -> None:
    output = await ADAPTER.generate(_request(base_url), client)
    assert fake.generations[0].body["seed"] == -1
    assert "override_settings" not in fake.generations[0].body  # "default": keep the loaded one
    assert isinstance(output.images[0].seed, int) and output.images[0].seed >= 0


async def test_img2img_with_references(
    fake: FakeA1111State, base_url: str, client: httpx.AsyncClient
) -> None:
    refs = (picture((255, 0, 0)),)
    output = await ADAPTER.generate(_request(base_url, reference_images=refs), client)
    assert len(output.images) == 1
    [call] = fake.generations
    assert call.path == "/sdapi/v1/img2img"
    assert call.body["init_images"] == [base64.b64encode(refs[0].data).decode()]
    assert call.body["denoising_strength"] == 0.75

    fake.reset()
    await ADAPTER.generate(
        _request(base_url, reference_images=refs, options={"denoising_strength": 0.3}), client
    )
    assert fake.generations[0].body["denoising_strength"] == 0.3


async def test_profile_payload_is_merged(
    fake: FakeA1111State, base_url: str, client: httpx.AsyncClient
) -> None:
    config = {"poll_interval_s": 0.02, "payload": {"enable_hr": False, "prompt": "ignored"}}
    await ADAPTER.generate(_request(base_url, provider_config=config), client)
    body = fake.generations[0].body
    assert body["enable_hr"] is False
    assert body["prompt"] == "a lighthouse on a cliff at dusk"  # the request wins


async def test_extra_pictures_after_the_batch_are_dropped(
    fake: FakeA1111State, base_url: str, client: httpx.AsyncClient
) -> None:
    output = await ADAPTER.generate(
        _request(base_url, prompt="x [stable-diffusion:extra-images]"), client
    )
    assert len(output.images) == 1


async def test_basic_auth(fake: FakeA1111State, base_url: str, client: httpx.AsyncClient) -> None:
    fake.credentials = CREDENTIALS
    output = await ADAPTER.generate(_request(base_url, api_key=CREDENTIALS), client)
    assert len(output.images) == 1
    expected = "Basic " + base64.b64encode(CREDENTIALS.encode()).decode()
    assert all(r.headers["authorization"] == expected for r in fake.requests)

    wrong = "atelier:not-the-password-xyz"
    error = await _fail(_request(base_url, api_key=wrong), client)
    assert error.info.error_class is ErrorClass.AUTH
    assert "not-the-password-xyz" not in str(error.info.detail)


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error_class"),
    [
        ({"prompt": "x [stable-diffusion:oom]"}, ErrorClass.PROVIDER_UNAVAILABLE),
        ({"prompt": "x [stable-diffusion:500-html]"}, ErrorClass.PROVIDER_UNAVAILABLE),
        ({"prompt": "x [stable-diffusion:empty]"}, ErrorClass.NO_IMAGE_RETURNED),
        ({"prompt": "x [stable-diffusion:garbage-image]"}, ErrorClass.NO_IMAGE_RETURNED),
        ({"options": {"sampler_name": "Nonexistent"}}, ErrorClass.INVALID_REQUEST),  # 404
        ({"options": {"steps": "many"}}, ErrorClass.INVALID_REQUEST),  # 422
    ],
)
async def test_failures_map_to_the_taxonomy(
    fake: FakeA1111State,
    base_url: str,
    client: httpx.AsyncClient,
    overrides: dict[str, Any],
    error_class: ErrorClass,
) -> None:
    store = InMemoryResumeStore()
    error = await _fail(_request(base_url, resume=store, **overrides), client)
    assert error.info.error_class is error_class
    assert error.info.message and error.info.detail
    assert store.handle == {}


async def test_oom_detail_reaches_the_admin(
    fake: FakeA1111State, base_url: str, client: httpx.AsyncClient
) -> None:
    error = await _fail(_request(base_url, prompt="x [stable-diffusion:oom]"), client)
    assert "OutOfMemoryError" in (error.info.detail or "")


@pytest.mark.parametrize(
    "overrides",
    [
        {"prompt": ""},
        {"base_url": None},
        {"provider_config": {"payload": []}},
        {"reference_images": (picture((1, 1, 1)), picture((2, 2, 2)))},  # one init image only
    ],
)
async def test_bad_requests_are_never_sent(
    fake: FakeA1111State, base_url: str, client: httpx.AsyncClient, overrides: dict[str, Any]
) -> None:
    # Counted from here: a late request of an earlier test may still arrive.
    seen = len(fake.requests)
    error = await _fail(_request(**{"base_url": base_url, **overrides}), client)
    assert error.info.error_class is ErrorClass.INVALID_REQUEST
    assert fake.requests[seen:] == []


async def test_unreachable_server_is_provider_unavailable(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = await _fail(_request(f"http://127.0.0.1:{port}"), client)
    assert error.info.error_class is ErrorClass.PROVIDER_UNAVAILABLE


async def test_slow_generation_times_out(
    fake: FakeA1111State, base_url: str, client: httpx.AsyncClient
) -> None:
    fake.step_s = 0.2
    error = await _fail(_request(base_url, timeout_s=0.4), client)
    assert error.info.error_class is ErrorClass.TIMEOUT
    fake.interrupted = True  # let the abandoned generation end before the next test
    await wait_until(lambda: fake.job_count == 0, "the abandoned generation ended")


# --- cancel ------------------------------------------------------------------------------


async def test_cancel_interrupts_the_running_generation(
    fake: FakeA1111State, base_url: str, client: httpx.AsyncClient
) -> None:
    fake.step_s = 0.1
    store = InMemoryResumeStore()
    request = _request(base_url, resume=store)
    task = asyncio.create_task(ADAPTER.generate(request, client))
    await wait_until(lambda: fake.job_count == 1, "the generation started")
    assert store.handle == {"provider": "stable-diffusion", "running": True}

    await ADAPTER.cancel(request, store.handle, client)

    with pytest.raises(ProviderError) as caught:
        await task
    assert caught.value.error_class is ErrorClass.CANCELLED
    assert [r.path for r in fake.requests if r.method == "POST"][-1] == "/sdapi/v1/interrupt"
    assert fake.sampling_step < 20  # it stopped early


async def test_cancel_of_a_finished_call_does_nothing(
    fake: FakeA1111State, base_url: str, client: httpx.AsyncClient
) -> None:
    store = InMemoryResumeStore()
    request = _request(base_url, resume=store)
    await ADAPTER.generate(request, client)
    fake.requests.clear()
    assert store.handle == {}
    await ADAPTER.cancel(request, store.handle, client)
    assert fake.requests == []  # somebody else's generation is left alone


def test_max_images_per_call() -> None:
    assert ADAPTER.max_images_per_call("anything") == 4
