"""The BFL adapter against the fake BFL server: submit, poll, download, and resume."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from adapter_support import assert_classified, assert_key_hidden, failure, picture, serve

from atelier_contracts.errors import ErrorClass
from atelier_fakes.bfl import FakeBFLState, create_bfl_fake
from atelier_workers.adapters import BFLAdapter, ImageRequest, ProviderError
from atelier_workers.adapters.base import InMemoryResumeStore, ReferenceImage
from atelier_workers.adapters.bfl import flux_dimensions

ADAPTER = BFLAdapter()
API_KEY = "bfl-test-key-0123456789abcdef-atelier"
FAST_POLLING = {"poll_interval_s": 0.05}


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[str, FakeBFLState]]:
    yield from serve(
        create_bfl_fake,
        FakeBFLState(api_key=API_KEY, pending_s=0.15, hang_s=5.0, retry_after_s=2.0),
        "/v1",
    )


@pytest.fixture
def fake(fake_server: tuple[str, FakeBFLState]) -> FakeBFLState:
    state = fake_server[1]
    state.reset()
    state.pending_s, state.url_ttl_s = 0.15, 600.0
    return state


def reference(color: tuple[int, int, int]) -> ReferenceImage:
    return picture(color, (32, 32))


def _request(base_url: str, **overrides: Any) -> ImageRequest:
    values: dict[str, Any] = {
        "model": "flux-2-pro",
        "prompt": "a lighthouse on a cliff at dusk",
        "size": "1024x768",
        "base_url": base_url,
        "api_key": API_KEY,
        "timeout_s": 10.0,
        "provider_config": FAST_POLLING,
    }
    return ImageRequest(**{**values, **overrides})


async def _fail(request: ImageRequest, client: httpx.AsyncClient) -> ProviderError:
    return await failure(ADAPTER, request, client)


# --- success -----------------------------------------------------------------------------


async def test_submit_poll_download(
    fake: FakeBFLState, base_url: str, client: httpx.AsyncClient
) -> None:
    store = InMemoryResumeStore()
    request = _request(base_url, seed=99, negative_prompt="fog", resume=store)
    output = await ADAPTER.generate(request, client)

    [image] = output.images
    assert (image.content_type, image.width, image.height) == ("image/jpeg", 1024, 768)
    assert image.seed == 99
    assert output.usage["cost"] == 3.0
    [submission] = fake.submissions
    assert submission.path == "/v1/flux-2-pro"
    assert submission.headers["x-key"] == API_KEY
    # No negative prompt: FLUX has none.
    assert submission.body == {
        "prompt": "a lighthouse on a cliff at dusk",
        "width": 1024,
        "height": 768,
        "seed": 99,
    }
    assert len(fake.polls) >= 2  # Pending at least once, then Ready
    assert all(poll.headers["x-key"] == API_KEY for poll in fake.polls)
    [download] = fake.downloads
    assert "x-key" not in download.headers  # the signed sample URL needs no key
    # The handle the adapter saved before polling, kept so a redelivery re-downloads for free.
    assert store.handle is not None
    assert store.handle["id"] == output.provider_request_id
    assert store.handle["polling_url"].endswith(f"/v1/get_result?id={store.handle['id']}")


async def test_reference_images_become_input_image_fields(
    fake: FakeBFLState, base_url: str, client: httpx.AsyncClient
) -> None:
    refs = tuple(reference((i * 60, 0, 0)) for i in range(3))
    await ADAPTER.generate(_request(base_url, reference_images=refs), client)
    body = fake.submissions[0].body
    fields = ["input_image", "input_image_2", "input_image_3"]
    assert [base64.b64decode(body[name]) for name in fields] == [ref.data for ref in refs]


async def test_kontext_takes_the_nearest_aspect_ratio(
    fake: FakeBFLState, base_url: str, client: httpx.AsyncClient
) -> None:
    request = _request(
        base_url,
        model="flux-kontext-pro",
        size="1792x1024",
        reference_images=(reference((0, 90, 0)),),
        options={"safety_tolerance": 2, "output_format": "png", "ignored": True},
    )
    output = await ADAPTER.generate(request, client)
    body = fake.submissions[0].body
    assert body["aspect_ratio"] == "16:9"
    assert "width" not in body and "height" not in body
    assert body["safety_tolerance"] == 2 and body["output_format"] == "png"
    assert "ignored" not in body
    assert output.images[0].content_type == "image/png"
    assert output.images[0].width > output.images[0].height


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("1024x768", (1024, 768)),
        ("1000x700", (1008, 704)),
        ("4096x4096", (2048, 2048)),
        ("3840x2160", (2720, 1536)),
        ("40x40", (64, 64)),
    ],
)
def test_sizes_become_multiples_of_16_within_4_megapixels(
    size: str, expected: tuple[int, int]
) -> None:
    width, height = (int(side) for side in size.split("x"))
    result = flux_dimensions(width, height)
    assert result == expected
    assert result[0] % 16 == 0 and result[1] % 16 == 0
    assert result[0] * result[1] <= 4 * 1024 * 1024


async def test_transient_poll_errors_do_not_abandon_the_task(
    fake: FakeBFLState, base_url: str, client: httpx.AsyncClient
) -> None:
    output = await ADAPTER.generate(_request(base_url, prompt="x [bfl:poll-flaky]"), client)
    assert len(output.images) == 1
    assert len(fake.submissions) == 1
    assert len(fake.polls) >= 3


# --- resume after a restart --------------------------------------------------------------


async def test_resume_after_cancel_while_polling_submits_once(
    fake: FakeBFLState, base_url: str, client: httpx.AsyncClient
) -> None:
    """A worker killed mid-poll, then restarted with the same task's store, finishes the job
    it already paid for instead of submitting a second one."""
    fake.pending_s = 1.0
    store = InMemoryResumeStore()
    request = _request(base_url, resume=store)

    first = asyncio.create_task(ADAPTER.generate(request, client))
    for _ in range(200):  # the handle is saved right after the submission answers
        if store.handle:
            break
        await asyncio.sleep(0.01)
    assert store.handle is not None, "the handle must be saved before polling starts"
    await asyncio.sleep(0.1)  # let it poll at least once: cancelled *while polling*
    assert not first.done()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(fake.submissions) == 1
    saved = dict(store.handle)
    polls_before = len(fake.polls)

    output = await ADAPTER.generate(request, client)  # "the restarted worker"

    assert len(fake.submissions) == 1
    assert len(fake.polls) > polls_before
    assert output.provider_request_id == saved["id"]
    assert len(output.images) == 1


async def test_resume_of_a_ready_task_only_downloads(
    fake: FakeBFLState, base_url: str, client: httpx.AsyncClient
) -> None:
    store = InMemoryResumeStore()
    await ADAPTER.generate(_request(base_url, resume=store), client)
    again = await ADAPTER.generate(_request(base_url, resume=store), client)
    assert len(again.images) == 1
    assert len(fake.submissions) == 1
    assert len(fake.downloads) == 2


async def test_resume_of_a_vanished_task_submits_afresh(
    fake: FakeBFLState, base_url: str, client: httpx.AsyncClient
) -> None:
    gone = {"id": "0000-gone", "polling_url": f"{base_url}/get_result?id=0000-gone"}
    store = InMemoryResumeStore(dict(gone))
    output = await ADAPTER.generate(_request(base_url, resume=store), client)
    assert len(output.images) == 1
    assert len(fake.submissions) == 1
    assert store.handle is not None and store.handle["id"] != gone["id"]


async def test_timeout_keeps_the_handle_for_the_retry(
    fake: FakeBFLState, base_url: str, client: httpx.AsyncClient
) -> None:
    store = InMemoryResumeStore()
    error = await _fail(
        _request(base_url, prompt="x [bfl:slow]", timeout_s=0.5, resume=store), client
    )
    assert error.info.error_class is ErrorClass.TIMEOUT
    assert store.handle and store.handle["id"]


# --- error mapping -----------------------------------------------------------------------

ERROR_CASES: list[tuple[str, ErrorClass, str | None, float | None]] = [
    ("request-moderated", ErrorClass.CONTENT_BLOCKED, "input", None),
    ("content-moderated", ErrorClass.CONTENT_BLOCKED, "output", None),
    ("error", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("task-not-found", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("expired-url", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("garbage-image", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("foreign-polling-url", ErrorClass.INVALID_REQUEST, None, None),
    ("401-echo-key", ErrorClass.AUTH, None, None),
    ("402", ErrorClass.QUOTA_EXHAUSTED, None, None),
    ("422", ErrorClass.INVALID_REQUEST, None, None),
    ("429", ErrorClass.RATE_LIMITED, None, 2.0),
    ("429-no-hint", ErrorClass.RATE_LIMITED, None, None),
    ("500", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("503", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
]
# Failures after a task existed leave no handle behind: a retry must submit afresh.
_AFTER_SUBMISSION = {
    "request-moderated",
    "content-moderated",
    "error",
    "task-not-found",
    "expired-url",
    "garbage-image",
}


@pytest.mark.parametrize(("marker", "error_class", "stage", "retry_after"), ERROR_CASES)
async def test_error_modes_map_to_the_taxonomy(
    fake: FakeBFLState,
    base_url: str,
    client: httpx.AsyncClient,
    marker: str,
    error_class: ErrorClass,
    stage: str | None,
    retry_after: float | None,
) -> None:
    store = InMemoryResumeStore()
    error = await _fail(_request(base_url, prompt=f"x [bfl:{marker}]", resume=store), client)
    assert_classified(error, error_class, stage, retry_after)
    assert_key_hidden(error, API_KEY)
    if marker in _AFTER_SUBMISSION:
        assert store.handle == {}
    assert len(fake.submissions) == 1


async def test_sample_url_expires_so_it_is_fetched_at_once(
    fake: FakeBFLState, base_url: str, client: httpx.AsyncClient
) -> None:
    fake.url_ttl_s = 0.3
    output = await ADAPTER.generate(_request(base_url), client)  # inside the TTL
    assert len(output.images) == 1
    url = f"{base_url.removesuffix('/v1')}{fake.downloads[0].path}"
    await asyncio.sleep(0.4)
    assert (await client.get(url)).status_code == 410


async def test_wrong_key_is_auth(
    fake: FakeBFLState, base_url: str, client: httpx.AsyncClient
) -> None:
    error = await _fail(_request(base_url, api_key="bfl-wrong-key-000000000000"), client)
    assert error.info.error_class is ErrorClass.AUTH


async def test_hanging_submission_times_out(
    fake: FakeBFLState, base_url: str, client: httpx.AsyncClient
) -> None:
    error = await _fail(_request(base_url, prompt="x [bfl:hang]", timeout_s=0.5), client)
    assert error.info.error_class is ErrorClass.TIMEOUT


@pytest.mark.parametrize(
    "overrides",
    [
        {"prompt": ""},
        {"size": "huge"},
        {"model": "flux-pro-1.1", "reference_images": (reference((1, 1, 1)),)},
        {"reference_images": tuple(reference((i, 0, 0)) for i in range(9))},
        {"provider_config": {"poll_interval_s": "often"}},
    ],
)
async def test_adapter_never_sends_an_invalid_body(
    fake: FakeBFLState, base_url: str, client: httpx.AsyncClient, overrides: dict[str, Any]
) -> None:
    # Counted from here: a late request of an earlier test may still arrive.
    seen = len(fake.submissions)
    error = await _fail(_request(base_url, **overrides), client)
    assert error.info.error_class is ErrorClass.INVALID_REQUEST
    assert fake.submissions[seen:] == []


def test_max_images_per_call() -> None:
    assert ADAPTER.max_images_per_call("flux-2-pro") == 1
