"""The fal.ai adapter against the fake fal queue API, over real HTTP on a local port."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from adapter_support import ProgressLog, assert_classified, failure, picture, saved_handle, serve

from atelier_contracts.errors import ErrorClass
from atelier_fakes.falai import FakeFalState, create_falai_fake
from atelier_workers.adapters import ProviderError
from atelier_workers.adapters.base import ImageRequest, InMemoryResumeStore
from atelier_workers.adapters.falai import FalAdapter

ADAPTER = FalAdapter()
API_KEY = "fal-test-key-id:0123456789abcdef"
MODEL = "fal-ai/flux/dev"  # `dev` is a subpath: status URLs must drop it


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[str, FakeFalState]]:
    yield from serve(create_falai_fake, FakeFalState(api_key=API_KEY))


@pytest.fixture
def fake(fake_server: tuple[str, FakeFalState]) -> FakeFalState:
    _, state = fake_server
    state.reset()
    state.queue_s, state.run_s, state.queue_position = 0.1, 0.1, 3
    state.url_ttl_s = state.result_ttl_s = 3600.0
    state.status_http_code = 200
    return state


def _request(base_url: str, **overrides: Any) -> ImageRequest:
    values: dict[str, Any] = {
        "model": MODEL,
        "prompt": "a lighthouse on a cliff at dusk",
        "size": "512x384",
        "base_url": base_url,
        "api_key": API_KEY,
        "timeout_s": 10.0,
        "provider_config": {"poll_interval_s": 0.02},
    }
    return ImageRequest(**{**values, **overrides})


async def _fail(request: ImageRequest, client: httpx.AsyncClient) -> ProviderError:
    return await failure(ADAPTER, request, client)


# --- success -----------------------------------------------------------------------------


async def test_success_follows_returned_urls(
    fake: FakeFalState, base_url: str, client: httpx.AsyncClient
) -> None:
    # Long enough phases that a 20 ms poll sees both however busy the machine is.
    fake.queue_s, fake.run_s = 1.0, 1.0
    seen = ProgressLog()
    store = InMemoryResumeStore()
    request = _request(
        base_url,
        seed=7,
        negative_prompt="fog",
        options={"num_inference_steps": 20, "quality": "high"},
        resume=store,
        on_progress=seen,
    )
    output = await ADAPTER.generate(request, client)

    [image] = output.images
    assert (image.width, image.height, image.seed) == (512, 384, 7)
    assert image.content_type == "image/jpeg"
    assert store.handle is not None
    assert output.provider_request_id == store.handle["request_id"]

    [submit] = fake.submissions
    assert submit.path == f"/{MODEL}"
    assert submit.headers["authorization"] == f"Key {API_KEY}"
    assert submit.body == {
        "prompt": "a lighthouse on a cliff at dusk",
        "num_images": 1,
        "image_size": {"width": 512, "height": 384},
        "seed": 7,
        "negative_prompt": "fog",
        "num_inference_steps": 20,  # a fal input; `quality` is not one and was dropped
    }
    polled = {recorded.path for recorded in fake.requests if recorded.method == "GET"}
    request_id = store.handle["request_id"]
    # Status and result URLs are fal's own, without the `/dev` subpath.
    assert f"/fal-ai/flux/requests/{request_id}" in polled
    assert any(path.endswith("/status") for path in polled)
    assert fake.downloads and all("authorization" not in d.headers for d in fake.downloads)
    assert any(detail.startswith("queued at position") for _, detail in seen)
    assert (None, "running") in seen


async def test_references_go_as_data_uris(
    fake: FakeFalState, base_url: str, client: httpx.AsyncClient
) -> None:
    refs = (picture((255, 0, 0)), picture((0, 0, 255)))
    await ADAPTER.generate(_request(base_url, reference_images=refs), client)
    urls = fake.submissions[0].body["image_urls"]
    assert len(urls) == 2
    assert urls[0] == "data:image/png;base64," + base64.b64encode(refs[0].data).decode()

    fake.reset()
    config = {"poll_interval_s": 0.02, "reference_field": "image_url"}
    await ADAPTER.generate(
        _request(base_url, reference_images=refs[:1], provider_config=config), client
    )
    assert fake.submissions[0].body["image_url"].startswith("data:image/png;base64,")
    # A single-image field cannot take two: refused before sending, nothing dropped.
    error = await _fail(_request(base_url, reference_images=refs, provider_config=config), client)
    assert error.info.error_class is ErrorClass.INVALID_REQUEST
    assert len(fake.submissions) == 1


async def test_aspect_ratio_mode_and_extra_inputs(
    fake: FakeFalState, base_url: str, client: httpx.AsyncClient
) -> None:
    config = {"poll_interval_s": 0.02, "size_field": "aspect_ratio", "input": {"loras": []}}
    await ADAPTER.generate(_request(base_url, size="1920x1080", provider_config=config), client)
    body = fake.submissions[0].body
    assert body["aspect_ratio"] == "16:9"
    assert body["loras"] == []


async def test_status_hiccups_are_ridden_out(
    fake: FakeFalState, base_url: str, client: httpx.AsyncClient
) -> None:
    for marker in ("status-502", "status-429"):
        output = await ADAPTER.generate(_request(base_url, prompt=f"x [falai:{marker}]"), client)
        assert len(output.images) == 1
    assert len(fake.submissions) == 2


async def test_a_202_status_answer_keeps_polling(
    fake: FakeFalState, base_url: str, client: httpx.AsyncClient
) -> None:
    # Any 2xx naming a state fal documents is an answer, as fal's own client takes it.
    fake.status_http_code = 202
    store = InMemoryResumeStore()
    output = await ADAPTER.generate(_request(base_url, resume=store), client)
    assert len(output.images) == 1
    assert store.handle is not None
    polls = [r for r in fake.requests if r.path.endswith("/status")]
    assert len(polls) >= 2  # it polled on past the first 202, through to COMPLETED


async def test_a_2xx_status_answer_without_a_known_state_fails_clearly(
    fake: FakeFalState, base_url: str, client: httpx.AsyncClient
) -> None:
    store = InMemoryResumeStore()
    request = _request(base_url, prompt="x [falai:status-unknown]", resume=store)
    error = await _fail(request, client)
    assert error.info.error_class is ErrorClass.PROVIDER_UNAVAILABLE
    assert "HTTP 202" in (error.info.detail or "")
    assert "WARMING_UP" in (error.info.detail or "")
    # Not polled until the timeout: a few answers in a row, then the failure.
    assert len([r for r in fake.requests if r.path.endswith("/status")]) == 3
    # The request may still finish at fal: a retry resumes it rather than paying again.
    assert store.handle and store.handle["provider"] == "falai"


# --- error mapping -----------------------------------------------------------------------

ERROR_CASES: list[tuple[str, ErrorClass, str | None, float | None]] = [
    # Auth, rate limit, outage, content block and invalid request: test_adapter_contract.py.
    ("locked", ErrorClass.QUOTA_EXHAUSTED, None, None),
    ("nsfw", ErrorClass.CONTENT_BLOCKED, "output", None),
    ("model-error", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("empty", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("garbage-image", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("expired-url", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("result-expired", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("lost", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
]


@pytest.mark.parametrize(("marker", "error_class", "stage", "retry_after"), ERROR_CASES)
async def test_error_modes_map_to_the_taxonomy(
    fake: FakeFalState,
    base_url: str,
    client: httpx.AsyncClient,
    marker: str,
    error_class: ErrorClass,
    stage: str | None,
    retry_after: float | None,
) -> None:
    error = await _fail(_request(base_url, prompt=f"x [falai:{marker}]"), client)
    assert_classified(error, error_class, stage, retry_after)
    info = error.info
    for text in (info.detail, str(error), repr(error)):
        assert API_KEY not in text


async def test_a_finished_failure_forgets_the_handle(
    fake: FakeFalState, base_url: str, client: httpx.AsyncClient
) -> None:
    store = InMemoryResumeStore()
    await _fail(_request(base_url, prompt="x [falai:model-error]", resume=store), client)
    assert store.handle == {}  # a retry submits anew instead of re-reading the failure


async def test_wrong_key_is_auth_and_never_shown(
    fake: FakeFalState, base_url: str, client: httpx.AsyncClient
) -> None:
    wrong = "fal-wrong-key:abcdefghijkl"
    error = await _fail(_request(base_url, api_key=wrong), client)
    assert error.info.error_class is ErrorClass.AUTH
    assert wrong not in str(error.info.detail)


async def test_slow_request_times_out_and_keeps_its_handle(
    fake: FakeFalState, base_url: str, client: httpx.AsyncClient
) -> None:
    fake.run_s = 5.0
    store = InMemoryResumeStore()
    error = await _fail(_request(base_url, timeout_s=0.5, resume=store), client)
    assert error.info.error_class is ErrorClass.TIMEOUT
    assert store.handle and store.handle["provider"] == "falai"


@pytest.mark.parametrize("overrides", [{"prompt": ""}, {"size": "big"}])
async def test_bad_requests_are_never_sent(
    fake: FakeFalState, base_url: str, client: httpx.AsyncClient, overrides: dict[str, Any]
) -> None:
    # Counted from here: a late request of an earlier test may still arrive.
    seen = len(fake.requests)
    error = await _fail(_request(base_url, **overrides), client)
    assert error.info.error_class is ErrorClass.INVALID_REQUEST
    assert fake.requests[seen:] == []


# --- cancel and resume -------------------------------------------------------------------


async def test_cancel_stops_a_queued_request(
    fake: FakeFalState, base_url: str, client: httpx.AsyncClient
) -> None:
    fake.queue_s = 5.0
    store = InMemoryResumeStore()
    request = _request(base_url, resume=store)
    task = asyncio.create_task(ADAPTER.generate(request, client))
    handle = await saved_handle(store)

    await ADAPTER.cancel(request, handle, client)

    with pytest.raises(ProviderError) as caught:
        await task
    assert caught.value.error_class is ErrorClass.CANCELLED
    assert fake.jobs[handle["request_id"]].cancelled
    [put] = [recorded for recorded in fake.requests if recorded.method == "PUT"]
    assert put.headers["authorization"] == f"Key {API_KEY}"


async def test_cancel_after_completion_is_quiet(
    fake: FakeFalState, base_url: str, client: httpx.AsyncClient
) -> None:
    store = InMemoryResumeStore()
    request = _request(base_url, resume=store)
    await ADAPTER.generate(request, client)
    assert store.handle is not None
    await ADAPTER.cancel(request, store.handle, client)  # ALREADY_COMPLETED: nothing to do


async def test_resume_after_restart_submits_once(
    fake: FakeFalState, base_url: str, client: httpx.AsyncClient
) -> None:
    fake.run_s = 0.6
    store = InMemoryResumeStore()
    first = asyncio.create_task(ADAPTER.generate(_request(base_url, resume=store), client))
    handle = await saved_handle(store)
    first.cancel()  # the worker dies mid-wait
    with pytest.raises(asyncio.CancelledError):
        await first

    output = await ADAPTER.generate(_request(base_url, resume=store), client)

    assert len(fake.submissions) == 1
    assert output.provider_request_id == handle["request_id"]
    assert len(output.images) == 1


async def test_resume_of_a_vanished_request_submits_again(
    fake: FakeFalState, base_url: str, client: httpx.AsyncClient
) -> None:
    root = f"{base_url}/fal-ai/flux/requests/nope"
    store = InMemoryResumeStore(
        {
            "provider": "falai",
            "request_id": "nope",
            "status_url": f"{root}/status",
            "response_url": root,
            "cancel_url": f"{root}/cancel",
        }
    )
    output = await ADAPTER.generate(_request(base_url, resume=store), client)
    assert len(output.images) == 1
    assert len(fake.submissions) == 1
    assert store.handle is not None and store.handle["request_id"] != "nope"


def test_max_images_per_call() -> None:
    assert ADAPTER.max_images_per_call(MODEL) == 1
