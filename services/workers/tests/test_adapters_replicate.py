"""The Replicate adapter against the fake Replicate API, over real HTTP on a local port."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from adapter_support import ProgressLog, assert_classified, failure, picture, saved_handle, serve

from atelier_contracts.errors import ErrorClass
from atelier_fakes.replicate import FakeReplicateState, create_replicate_fake
from atelier_workers.adapters import ProviderError
from atelier_workers.adapters.base import ImageRequest, InMemoryResumeStore
from atelier_workers.adapters.replicate import ReplicateAdapter

ADAPTER = ReplicateAdapter()
API_TOKEN = "r8_test_token_0123456789abcdefABCDEF"
MODEL = "black-forest-labs/flux-dev"
VERSION = "a" * 64


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[str, FakeReplicateState]]:
    yield from serve(create_replicate_fake, FakeReplicateState(api_token=API_TOKEN), "/v1")


@pytest.fixture
def fake(fake_server: tuple[str, FakeReplicateState]) -> FakeReplicateState:
    _, state = fake_server
    state.reset()
    state.boot_s, state.run_s, state.url_ttl_s = 0.05, 0.2, 3600.0
    state.poll_http_code = 200
    return state


def _request(base_url: str, **overrides: Any) -> ImageRequest:
    values: dict[str, Any] = {
        "model": MODEL,
        "prompt": "a lighthouse on a cliff at dusk",
        "size": "1344x768",
        "base_url": base_url,
        "api_key": API_TOKEN,
        "timeout_s": 10.0,
        # No server-side wait by default here, so tests see the polling path.
        "provider_config": {"poll_interval_s": 0.02, "prefer_wait_s": 0},
    }
    return ImageRequest(**{**values, **overrides})


async def _fail(request: ImageRequest, client: httpx.AsyncClient) -> ProviderError:
    return await failure(ADAPTER, request, client)


# --- success -----------------------------------------------------------------------------


async def test_success_by_polling(
    fake: FakeReplicateState, base_url: str, client: httpx.AsyncClient
) -> None:
    seen = ProgressLog()
    store = InMemoryResumeStore()
    request = _request(
        base_url,
        seed=99,
        negative_prompt="fog",
        options={"guidance": 3.5, "style": "vivid"},
        resume=store,
        on_progress=seen,
    )
    output = await ADAPTER.generate(request, client)

    [image] = output.images
    assert (image.width, image.height, image.seed) == (1344, 768, 99)
    assert image.content_type == "image/webp"
    assert store.handle is not None
    assert output.provider_request_id == store.handle["id"]
    assert output.usage["predict_time"] == pytest.approx(0.2)

    [create] = fake.submissions
    assert create.path == f"/v1/models/{MODEL}/predictions"
    assert create.headers["authorization"] == f"Bearer {API_TOKEN}"
    assert "prefer" not in create.headers
    assert create.body == {
        "input": {
            "prompt": "a lighthouse on a cliff at dusk",
            "aspect_ratio": "16:9",
            "seed": 99,
            "negative_prompt": "fog",
            "guidance": 3.5,  # a model input; `style` is not one and was dropped
        }
    }
    polls = [r for r in fake.requests if r.method == "GET"]
    assert polls and all(r.path == f"/v1/predictions/{store.handle['id']}" for r in polls)
    assert fake.downloads and all("authorization" not in d.headers for d in fake.downloads)
    details = [detail for _, detail in seen]
    assert any(detail.startswith("starting") for detail in details)
    assert any(fraction is not None and 0 <= fraction <= 1 for fraction, _ in seen)


async def test_prefer_wait_answers_in_one_call(
    fake: FakeReplicateState, base_url: str, client: httpx.AsyncClient
) -> None:
    config = {"poll_interval_s": 0.02, "prefer_wait_s": 5}
    output = await ADAPTER.generate(_request(base_url, provider_config=config), client)
    assert len(output.images) == 1
    [create] = fake.submissions
    assert create.headers["prefer"] == "wait=5"
    assert [r for r in fake.requests if r.method == "GET"] == []  # no polling needed
    # The seed the model chose is read back from its logs.
    assert output.images[0].seed == next(iter(fake.predictions.values())).seed


async def test_prefer_wait_never_exceeds_the_timeout(
    fake: FakeReplicateState, base_url: str, client: httpx.AsyncClient
) -> None:
    config = {"poll_interval_s": 0.02, "prefer_wait_s": 600}
    await ADAPTER.generate(_request(base_url, provider_config=config, timeout_s=7.5), client)
    assert fake.submissions[0].headers["prefer"] == "wait=7"


async def test_version_and_width_height(
    fake: FakeReplicateState, base_url: str, client: httpx.AsyncClient
) -> None:
    config = {"poll_interval_s": 0.02, "prefer_wait_s": 0, "size_field": "width_height"}
    output = await ADAPTER.generate(
        _request(
            base_url, model=f"stability-ai/sdxl:{VERSION}", size="512x768", provider_config=config
        ),
        client,
    )
    assert (output.images[0].width, output.images[0].height) == (512, 768)
    [create] = fake.submissions
    assert create.path == "/v1/predictions"
    assert create.body["version"] == VERSION
    assert (create.body["input"]["width"], create.body["input"]["height"]) == (512, 768)


async def test_references_go_as_data_uris(
    fake: FakeReplicateState, base_url: str, client: httpx.AsyncClient
) -> None:
    refs = (picture((255, 0, 0)), picture((0, 0, 255)))
    await ADAPTER.generate(_request(base_url, reference_images=refs), client)
    uris = fake.submissions[0].body["input"]["input_images"]
    assert uris == ["data:image/png;base64," + base64.b64encode(ref.data).decode() for ref in refs]

    fake.reset()
    config = {
        "poll_interval_s": 0.02,
        "prefer_wait_s": 0,
        "reference_field": "image_input",
        "reference_as_list": True,
    }
    await ADAPTER.generate(
        _request(base_url, reference_images=refs, provider_config=config), client
    )
    assert len(fake.submissions[0].body["input"]["image_input"]) == 2

    config["reference_field"], config["reference_as_list"] = "input_image", False
    error = await _fail(_request(base_url, reference_images=refs, provider_config=config), client)
    assert error.info.error_class is ErrorClass.INVALID_REQUEST
    assert len(fake.submissions) == 1


async def test_poll_hiccup_is_ridden_out(
    fake: FakeReplicateState, base_url: str, client: httpx.AsyncClient
) -> None:
    output = await ADAPTER.generate(_request(base_url, prompt="x [replicate:poll-502]"), client)
    assert len(output.images) == 1


async def test_a_202_poll_answer_keeps_polling(
    fake: FakeReplicateState, base_url: str, client: httpx.AsyncClient
) -> None:
    # Any 2xx naming a status Replicate documents is an answer.
    fake.poll_http_code = 202
    output = await ADAPTER.generate(_request(base_url), client)
    assert len(output.images) == 1
    polls = [r for r in fake.requests if r.method == "GET" and "/predictions/" in r.path]
    assert len(polls) >= 2  # it polled on past the first 202, through to `succeeded`


async def test_a_2xx_poll_answer_without_a_known_status_fails_clearly(
    fake: FakeReplicateState, base_url: str, client: httpx.AsyncClient
) -> None:
    store = InMemoryResumeStore()
    request = _request(base_url, prompt="x [replicate:poll-unknown]", resume=store)
    error = await _fail(request, client)
    assert error.info.error_class is ErrorClass.PROVIDER_UNAVAILABLE
    assert "HTTP 202" in (error.info.detail or "")
    assert "warming" in (error.info.detail or "")
    polls = [r for r in fake.requests if r.method == "GET" and "/predictions/" in r.path]
    assert len(polls) == 3  # a few answers in a row, then the failure; not the timeout
    assert store.handle and store.handle["provider"] == "replicate"


# --- error mapping -----------------------------------------------------------------------

ERROR_CASES: list[tuple[str, ErrorClass, str | None, float | None]] = [
    # Auth, rate limit, outage, content block and invalid request: test_adapter_contract.py.
    ("402", ErrorClass.QUOTA_EXHAUSTED, None, None),
    ("404", ErrorClass.INVALID_REQUEST, None, None),
    ("failed", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("nsfw", ErrorClass.CONTENT_BLOCKED, "output", None),
    ("empty", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("expired-url", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("garbage-image", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("lost", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("aborted", ErrorClass.TIMEOUT, None, None),
]


@pytest.mark.parametrize(("marker", "error_class", "stage", "retry_after"), ERROR_CASES)
async def test_error_modes_map_to_the_taxonomy(
    fake: FakeReplicateState,
    base_url: str,
    client: httpx.AsyncClient,
    marker: str,
    error_class: ErrorClass,
    stage: str | None,
    retry_after: float | None,
) -> None:
    error = await _fail(_request(base_url, prompt=f"x [replicate:{marker}]"), client)
    assert_classified(error, error_class, stage, retry_after)
    info = error.info
    for text in (info.detail, str(error), repr(error)):
        assert API_TOKEN not in text


async def test_rfc7807_detail_reaches_the_admin(
    fake: FakeReplicateState, base_url: str, client: httpx.AsyncClient
) -> None:
    error = await _fail(_request(base_url, prompt="x [replicate:402]"), client)
    assert "title=Insufficient credit" in (error.info.detail or "")


async def test_a_failed_prediction_forgets_the_handle(
    fake: FakeReplicateState, base_url: str, client: httpx.AsyncClient
) -> None:
    store = InMemoryResumeStore()
    await _fail(_request(base_url, prompt="x [replicate:failed]", resume=store), client)
    assert store.handle == {}


async def test_wrong_token_is_auth_and_never_shown(
    fake: FakeReplicateState, base_url: str, client: httpx.AsyncClient
) -> None:
    wrong = "r8_wrong_token_abcdefghijkl"
    error = await _fail(_request(base_url, api_key=wrong), client)
    assert error.info.error_class is ErrorClass.AUTH
    assert wrong not in str(error.info.detail)


async def test_slow_prediction_times_out_and_keeps_its_handle(
    fake: FakeReplicateState, base_url: str, client: httpx.AsyncClient
) -> None:
    fake.run_s = 5.0
    store = InMemoryResumeStore()
    error = await _fail(_request(base_url, timeout_s=0.5, resume=store), client)
    assert error.info.error_class is ErrorClass.TIMEOUT
    assert store.handle and store.handle["provider"] == "replicate"


@pytest.mark.parametrize("overrides", [{"prompt": ""}, {"model": "just-a-name"}, {"size": "1024"}])
async def test_bad_requests_are_never_sent(
    fake: FakeReplicateState, base_url: str, client: httpx.AsyncClient, overrides: dict[str, Any]
) -> None:
    # Counted from here: a late request of an earlier test may still arrive.
    seen = len(fake.requests)
    error = await _fail(_request(base_url, **overrides), client)
    assert error.info.error_class is ErrorClass.INVALID_REQUEST
    assert fake.requests[seen:] == []


# --- cancel and resume -------------------------------------------------------------------


async def test_cancel_stops_a_running_prediction(
    fake: FakeReplicateState, base_url: str, client: httpx.AsyncClient
) -> None:
    fake.run_s = 5.0
    store = InMemoryResumeStore()
    request = _request(base_url, resume=store)
    task = asyncio.create_task(ADAPTER.generate(request, client))
    handle = await saved_handle(store)

    await ADAPTER.cancel(request, handle, client)

    with pytest.raises(ProviderError) as caught:
        await task
    assert caught.value.error_class is ErrorClass.CANCELLED
    assert fake.predictions[handle["id"]].canceled_at is not None
    [cancel] = [r for r in fake.requests if r.path.endswith("/cancel")]
    assert cancel.headers["authorization"] == f"Bearer {API_TOKEN}"
    assert store.handle == {}


async def test_resume_after_restart_creates_once(
    fake: FakeReplicateState, base_url: str, client: httpx.AsyncClient
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
    assert output.provider_request_id == handle["id"]
    assert len(output.images) == 1


async def test_resume_of_a_vanished_prediction_creates_again(
    fake: FakeReplicateState, base_url: str, client: httpx.AsyncClient
) -> None:
    store = InMemoryResumeStore(
        {
            "provider": "replicate",
            "id": "gone",
            "get_url": f"{base_url}/predictions/gone",
            "cancel_url": f"{base_url}/predictions/gone/cancel",
        }
    )
    output = await ADAPTER.generate(_request(base_url, resume=store), client)
    assert len(output.images) == 1
    assert len(fake.submissions) == 1
    assert store.handle is not None and store.handle["id"] != "gone"


def test_max_images_per_call() -> None:
    assert ADAPTER.max_images_per_call(MODEL) == 1
