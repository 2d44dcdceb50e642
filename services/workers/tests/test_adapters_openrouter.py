"""The OpenRouter adapter (chat and images API) against the fake, over real HTTP."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from adapter_support import assert_classified, assert_key_hidden, failure, picture, serve

from atelier_contracts.errors import ErrorClass
from atelier_fakes.gemini import SIZES_1K
from atelier_fakes.openrouter import FakeOpenRouterState, create_openrouter_fake
from atelier_workers.adapters import ImageRequest, OpenRouterAdapter, ProviderError
from atelier_workers.adapters.base import ReferenceImage

ADAPTER = OpenRouterAdapter()
API_KEY = "sk-or-v1-test-atelier-0123456789abcdef"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[str, FakeOpenRouterState]]:
    yield from serve(
        create_openrouter_fake,
        FakeOpenRouterState(api_key=API_KEY, hang_s=5.0, retry_after_s=2.0, reset_in_s=5.0),
        "/api/v1",
    )


@pytest.fixture
def fake(fake_server: tuple[str, FakeOpenRouterState]) -> FakeOpenRouterState:
    state = fake_server[1]
    state.reset()
    state.url_ttl_s = 600.0
    return state


def reference(color: tuple[int, int, int]) -> ReferenceImage:
    return picture(color, (40, 40))


def _request(base_url: str, api: str = "chat", **overrides: Any) -> ImageRequest:
    values: dict[str, Any] = {
        "model": "google/gemini-2.5-flash-image",
        "prompt": "a lighthouse on a cliff at dusk",
        "size": "1024x1024",
        "base_url": base_url,
        "api_key": API_KEY,
        "timeout_s": 10.0,
        "provider_config": {"api": api},
    }
    return ImageRequest(**{**values, **overrides})


async def _fail(request: ImageRequest, client: httpx.AsyncClient) -> ProviderError:
    return await failure(ADAPTER, request, client)


# --- chat path ---------------------------------------------------------------------------


async def test_chat_success_without_references(
    fake: FakeOpenRouterState, base_url: str, client: httpx.AsyncClient
) -> None:
    output = await ADAPTER.generate(_request(base_url, seed=5, negative_prompt="fog"), client)

    [image] = output.images
    assert (image.content_type, image.width, image.height) == ("image/png", 1024, 1024)
    assert image.seed is None  # the chat path sends no seed
    assert output.provider_request_id and output.provider_request_id.startswith("gen-")
    assert output.usage["total_tokens"] > 0
    [sent] = fake.requests
    assert sent.path == "/api/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.body == {
        "model": "google/gemini-2.5-flash-image",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a lighthouse on a cliff at dusk"}],
            }
        ],
        "modalities": ["image", "text"],
        "image_config": {"aspect_ratio": "1:1", "image_size": "1K"},
    }


async def test_chat_success_with_reference_images(
    fake: FakeOpenRouterState, base_url: str, client: httpx.AsyncClient
) -> None:
    refs = (reference((250, 0, 0)), reference((0, 0, 250)))
    await ADAPTER.generate(_request(base_url, reference_images=refs), client)
    content = fake.requests[0].body["messages"][0]["content"]
    urls = [part["image_url"]["url"] for part in content if part["type"] == "image_url"]
    assert len(urls) == 2
    for url, ref in zip(urls, refs, strict=True):
        assert url.startswith("data:image/png;base64,")
        assert base64.b64decode(url.split(",", 1)[1]) == ref.data


async def test_image_only_models_ask_for_image_modality_only(
    fake: FakeOpenRouterState, base_url: str, client: httpx.AsyncClient
) -> None:
    output = await ADAPTER.generate(
        _request(base_url, model="black-forest-labs/flux.2-pro"), client
    )
    assert len(output.images) == 1
    assert fake.requests[0].body["modalities"] == ["image"]
    # Forcing text onto an image-only model fails the way OpenRouter fails it.
    config = {"api": "chat", "modalities": ["image", "text"]}
    error = await _fail(
        _request(base_url, model="black-forest-labs/flux.2-pro", provider_config=config), client
    )
    assert error.info.error_class is ErrorClass.INVALID_REQUEST
    assert "output modalities" in (error.info.detail or "")


@pytest.mark.parametrize(
    ("size", "ratio"),
    [("1536x1024", "3:2"), ("1792x1024", "16:9"), ("1024x1792", "9:16"), ("1152x896", "5:4")],
)
async def test_size_maps_to_nearest_ratio(
    fake: FakeOpenRouterState, base_url: str, client: httpx.AsyncClient, size: str, ratio: str
) -> None:
    output = await ADAPTER.generate(_request(base_url, size=size), client)
    assert fake.requests[0].body["image_config"] == {"aspect_ratio": ratio, "image_size": "1K"}
    assert (output.images[0].width, output.images[0].height) == SIZES_1K[ratio]


async def test_routing_preferences_and_attribution_headers(
    fake: FakeOpenRouterState, base_url: str, client: httpx.AsyncClient
) -> None:
    config = {
        "api": "chat",
        "provider": {"order": ["google-vertex"], "allow_fallbacks": False},
        "http_referer": "https://atelier.example",
        "app_title": "Atelier",
    }
    await ADAPTER.generate(_request(base_url, provider_config=config), client)
    sent = fake.requests[0]
    assert sent.body["provider"] == {"order": ["google-vertex"], "allow_fallbacks": False}
    assert sent.headers["http-referer"] == "https://atelier.example"
    assert sent.headers["x-title"] == "Atelier"


async def test_url_results_are_downloaded_at_once_without_the_key(
    fake: FakeOpenRouterState, base_url: str, client: httpx.AsyncClient
) -> None:
    fake.url_ttl_s = 0.3
    output = await ADAPTER.generate(_request(base_url, prompt="x [openrouter:url-result]"), client)
    assert output.images[0].width == 1024
    [download] = fake.downloads
    assert "authorization" not in download.headers
    await asyncio.sleep(0.4)
    url = f"{base_url.removesuffix('/api/v1')}{download.path}"
    assert (await client.get(url)).status_code == 410  # it would have expired by now


# --- images API --------------------------------------------------------------------------


async def test_images_api_success_with_seed_and_references(
    fake: FakeOpenRouterState, base_url: str, client: httpx.AsyncClient
) -> None:
    refs = (reference((1, 2, 3)),)
    request = _request(
        base_url,
        api="images",
        size="1792x1024",
        seed=42,
        negative_prompt="fog",
        reference_images=refs,
        options={"output_format": "png", "not_an_option": 1},
    )
    output = await ADAPTER.generate(request, client)
    assert (output.images[0].width, output.images[0].height) == SIZES_1K["16:9"]
    assert output.images[0].seed == 42  # sent, so it is this image's
    assert output.usage["cost"] > 0
    [sent] = fake.requests
    assert sent.path == "/api/v1/images"
    url = sent.body.pop("input_references")[0]["image_url"]["url"]
    assert base64.b64decode(url.split(",", 1)[1]) == refs[0].data
    assert sent.body == {
        "model": "google/gemini-2.5-flash-image",
        "prompt": "a lighthouse on a cliff at dusk",
        "n": 1,
        "aspect_ratio": "16:9",
        "resolution": "1K",
        "seed": 42,
        "output_format": "png",
    }


async def test_images_api_without_references(
    fake: FakeOpenRouterState, base_url: str, client: httpx.AsyncClient
) -> None:
    output = await ADAPTER.generate(_request(base_url, api="images"), client)
    assert len(output.images) == 1
    assert "input_references" not in fake.requests[0].body
    assert "seed" not in fake.requests[0].body
    assert output.images[0].seed is None


# --- error mapping -----------------------------------------------------------------------

ERROR_CASES: list[tuple[str, ErrorClass, str | None, float | None]] = [
    ("200-error", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("200-error-top", ErrorClass.RATE_LIMITED, None, None),
    ("empty", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("text-only", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("content-filter", ErrorClass.CONTENT_BLOCKED, "output", None),
    ("garbage-image", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("expired-url", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("400", ErrorClass.INVALID_REQUEST, None, None),
    ("401", ErrorClass.AUTH, None, None),
    ("401-echo-key", ErrorClass.AUTH, None, None),
    ("402", ErrorClass.QUOTA_EXHAUSTED, None, None),
    ("403", ErrorClass.CONTENT_BLOCKED, "input", None),
    ("408", ErrorClass.TIMEOUT, None, None),
    ("429", ErrorClass.RATE_LIMITED, None, 2.0),
    ("500", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("502", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("503", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("524", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("529", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
]
# The images API has no choices: these chat-only markers do not apply there.
_CHAT_ONLY = {"200-error", "text-only", "content-filter"}
_API_ERROR_CASES = [
    (api, *case)
    for api in ("chat", "images")
    for case in ERROR_CASES
    if api == "chat" or case[0] not in _CHAT_ONLY
]


@pytest.mark.parametrize(("api", "marker", "error_class", "stage", "retry_after"), _API_ERROR_CASES)
async def test_error_modes_map_to_the_taxonomy(
    fake: FakeOpenRouterState,
    base_url: str,
    client: httpx.AsyncClient,
    api: str,
    marker: str,
    error_class: ErrorClass,
    stage: str | None,
    retry_after: float | None,
) -> None:
    error = await _fail(_request(base_url, api=api, prompt=f"x [openrouter:{marker}]"), client)
    assert_classified(error, error_class, stage, retry_after)
    assert_key_hidden(error, API_KEY, 14)


async def test_rate_limit_reset_in_metadata_is_a_retry_hint(
    fake: FakeOpenRouterState, base_url: str, client: httpx.AsyncClient
) -> None:
    error = await _fail(_request(base_url, prompt="x [openrouter:429-reset]"), client)
    assert error.info.error_class is ErrorClass.RATE_LIMITED
    assert error.info.retry_after_s is not None
    assert 3.0 < error.info.retry_after_s <= 5.0


async def test_200_error_detail_names_the_upstream(
    fake: FakeOpenRouterState, base_url: str, client: httpx.AsyncClient
) -> None:
    error = await _fail(_request(base_url, prompt="x [openrouter:200-error]"), client)
    detail = error.info.detail or ""
    assert "HTTP 200" in detail and "code=502" in detail and "provider=Google" in detail


async def test_wrong_key_is_auth(
    fake: FakeOpenRouterState, base_url: str, client: httpx.AsyncClient
) -> None:
    error = await _fail(_request(base_url, api_key="sk-or-v1-wrong-wrong-wrong-wrong"), client)
    assert error.info.error_class is ErrorClass.AUTH


async def test_hanging_provider_times_out(
    fake: FakeOpenRouterState, base_url: str, client: httpx.AsyncClient
) -> None:
    error = await _fail(_request(base_url, prompt="x [openrouter:hang]", timeout_s=0.5), client)
    assert error.info.error_class is ErrorClass.TIMEOUT


@pytest.mark.parametrize(
    "overrides",
    [
        {"prompt": ""},
        {"provider_config": {"api": "completions"}},
        {"options": {"aspect_ratio": "7:5"}},
        {"options": {"image_size": "3K"}},
    ],
)
async def test_adapter_never_sends_an_invalid_body(
    fake: FakeOpenRouterState,
    base_url: str,
    client: httpx.AsyncClient,
    overrides: dict[str, Any],
) -> None:
    # Counted from here: a late request of an earlier test may still arrive.
    seen = len(fake.requests)
    error = await _fail(_request(base_url, **overrides), client)
    assert error.info.error_class is ErrorClass.INVALID_REQUEST
    assert fake.requests[seen:] == []


def test_max_images_per_call() -> None:
    assert ADAPTER.max_images_per_call("openai/gpt-image-1") == 1


async def test_a_moderation_refusal_carries_its_reasons_as_the_category(
    fake: FakeOpenRouterState, base_url: str, client: httpx.AsyncClient
) -> None:
    """OpenRouter's 403 names the moderation's `metadata.reasons` (issue 21, item 5)."""
    error = await _fail(_request(base_url, prompt="a fight [openrouter:403]"), client)
    assert (error.info.stage, error.info.category) == ("input", "violence")
