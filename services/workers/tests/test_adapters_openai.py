"""The OpenAI adapter against the fake OpenAI server, over real HTTP on a local port."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from adapter_support import assert_key_hidden, failure, serve

from atelier_contracts.errors import ErrorClass
from atelier_fakes import DEFAULT_SPEC_PATH, FakeOpenAIState, create_openai_fake
from atelier_fakes.openai import load_request_schema
from atelier_workers.adapters import ImageRequest, OpenAIAdapter, ProviderError

ADAPTER = OpenAIAdapter()
API_KEY = "sk-test-atelier-0123456789abcdef"
# Tests that post deliberately bad bodies themselves tag them so the body audit skips them.
RAW_HEADER = "x-test-raw"

needs_spec = pytest.mark.skipif(
    not DEFAULT_SPEC_PATH.is_file(), reason="OpenAI OpenAPI document not present"
)


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[str, FakeOpenAIState]]:
    yield from serve(
        create_openai_fake,
        FakeOpenAIState(api_key=API_KEY, hang_s=5.0, retry_after_s=2.0, retry_after_ms=1500),
        "/v1",
    )


@pytest.fixture
def fake(fake_server: tuple[str, FakeOpenAIState]) -> Iterator[FakeOpenAIState]:
    """The fake's state, fresh per test; afterwards, every body the adapter sent must be one
    OpenAI accepts."""
    _, state = fake_server
    state.reset()
    state.url_ttl_s = 3600.0
    yield state
    _assert_adapter_bodies_valid(state)


def _assert_adapter_bodies_valid(state: FakeOpenAIState) -> None:
    validator, known = load_request_schema(DEFAULT_SPEC_PATH)
    if validator is None:
        return
    for recorded in state.requests:
        if RAW_HEADER in recorded.headers:
            continue
        assert isinstance(recorded.body, dict)
        assert set(recorded.body) <= known, f"unknown fields in {recorded.body}"
        assert not list(validator.iter_errors(recorded.body)), recorded.body


def _request(base_url: str, **overrides: Any) -> ImageRequest:
    values: dict[str, Any] = {
        "model": "gpt-image-1",
        "prompt": "a lighthouse on a cliff at dusk",
        "size": "1024x1024",
        "n": 1,
        "base_url": base_url,
        "api_key": API_KEY,
        "timeout_s": 10.0,
    }
    return ImageRequest(**{**values, **overrides})


async def _fail(request: ImageRequest, client: httpx.AsyncClient) -> ProviderError:
    return await failure(ADAPTER, request, client)


# --- success -----------------------------------------------------------------------------


async def test_b64_success(fake: FakeOpenAIState, base_url: str, client: httpx.AsyncClient) -> None:
    request = _request(
        base_url,
        n=2,
        size="1536x1024",
        seed=42,
        negative_prompt="blurry",
        options={"quality": "high", "style": "vivid", "delay_s": 3, "output_format": "png"},
    )
    output = await ADAPTER.generate(request, client)

    assert len(output.images) == 2
    for image in output.images:
        assert (image.content_type, image.width, image.height) == ("image/png", 1536, 1024)
        assert image.seed is None and image.revised_prompt is None
    assert output.usage["total_tokens"] > 0
    assert output.provider_request_id is not None
    assert output.provider_request_id.startswith("req_")

    [sent] = fake.requests
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    # No seed or negative prompt (OpenAI has none); options the model does not take dropped.
    assert sent.body == {
        "model": "gpt-image-1",
        "prompt": "a lighthouse on a cliff at dusk",
        "n": 2,
        "size": "1536x1024",
        "quality": "high",
        "output_format": "png",
    }


async def test_output_format_jpeg(
    fake: FakeOpenAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    options = {"output_format": "jpeg", "output_compression": 80}
    output = await ADAPTER.generate(_request(base_url, options=options), client)
    assert output.images[0].content_type == "image/jpeg"


async def test_dalle3_asks_for_base64_and_returns_revised_prompt(
    fake: FakeOpenAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    request = _request(base_url, model="dall-e-3", options={"style": "natural", "quality": "hd"})
    output = await ADAPTER.generate(request, client)
    assert output.images[0].revised_prompt is not None
    assert "lighthouse" in output.images[0].revised_prompt
    assert fake.requests[0].body["response_format"] == "b64_json"
    assert fake.requests[0].body["style"] == "natural"
    assert fake.downloads == []


async def test_url_success_downloads_without_the_key(
    fake: FakeOpenAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    request = _request(
        base_url, model="dall-e-2", size="512x512", n=3, options={"response_format": "url"}
    )
    output = await ADAPTER.generate(request, client)
    assert [(i.width, i.height) for i in output.images] == [(512, 512)] * 3
    assert len(fake.downloads) == 3
    # Result URLs live on third-party storage in production; the key must not travel there.
    assert all("authorization" not in d.headers for d in fake.downloads)


async def test_url_expires_after_ttl(
    fake: FakeOpenAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    fake.url_ttl_s = 0.3
    request = _request(
        base_url, model="dall-e-2", size="256x256", options={"response_format": "url"}
    )
    await ADAPTER.generate(request, client)  # downloads at once, inside the TTL
    url = f"{base_url.removesuffix('/v1')}{fake.downloads[0].path}"
    await asyncio.sleep(0.4)
    assert (await client.get(url)).status_code == 410


async def test_expired_url_is_no_image_returned(
    fake: FakeOpenAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    request = _request(base_url, model="dall-e-2", size="256x256", prompt="x [openai:expired-url]")
    error = await _fail(request, client)
    assert error.info.error_class is ErrorClass.NO_IMAGE_RETURNED
    assert "410" in (error.info.detail or "")


# --- error mapping -----------------------------------------------------------------------

ERROR_CASES: list[tuple[str, str, ErrorClass, str | None, float | None]] = [
    # marker, model, class, stage, retry_after_s
    ("429", "gpt-image-1", ErrorClass.RATE_LIMITED, None, 2.0),
    ("429-ms", "gpt-image-1", ErrorClass.RATE_LIMITED, None, 1.5),
    ("insufficient-quota", "gpt-image-1", ErrorClass.QUOTA_EXHAUSTED, None, None),
    ("500", "gpt-image-1", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("503", "gpt-image-1", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("502-html", "gpt-image-1", ErrorClass.PROVIDER_UNAVAILABLE, None, None),
    ("moderation-input", "gpt-image-1", ErrorClass.CONTENT_BLOCKED, "input", None),
    ("moderation-output", "gpt-image-1", ErrorClass.CONTENT_BLOCKED, "output", None),
    ("content-policy", "dall-e-3", ErrorClass.CONTENT_BLOCKED, "input", None),
    ("bad-size", "gpt-image-1", ErrorClass.INVALID_REQUEST, None, None),
    ("401", "gpt-image-1", ErrorClass.AUTH, None, None),
    ("401-echo-key", "gpt-image-1", ErrorClass.AUTH, None, None),
    ("403", "gpt-image-1", ErrorClass.AUTH, None, None),
    ("empty", "gpt-image-1", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("garbage-image", "gpt-image-1", ErrorClass.NO_IMAGE_RETURNED, None, None),
    ("expired-url", "dall-e-2", ErrorClass.NO_IMAGE_RETURNED, None, None),
]


@pytest.mark.parametrize(("marker", "model", "error_class", "stage", "retry_after"), ERROR_CASES)
async def test_error_modes_map_to_the_taxonomy(
    fake: FakeOpenAIState,
    base_url: str,
    client: httpx.AsyncClient,
    marker: str,
    model: str,
    error_class: ErrorClass,
    stage: str | None,
    retry_after: float | None,
) -> None:
    size = "1024x1024"
    error = await _fail(
        _request(base_url, model=model, size=size, prompt=f"x [openai:{marker}]"), client
    )
    info = error.info
    assert (info.error_class, info.stage, info.retry_after_s) == (error_class, stage, retry_after)
    assert info.message  # plain text for the writer
    assert info.detail  # provider text for admins
    # The API key must never surface, not even partly (the fake echoes it on 401-echo-key).
    assert_key_hidden(error, API_KEY)


async def test_bad_size_detail_keeps_param_and_code(
    fake: FakeOpenAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    error = await _fail(_request(base_url, size="300x300"), client)  # a real model-rule failure
    assert error.info.error_class is ErrorClass.INVALID_REQUEST
    assert "param=size" in (error.info.detail or "")
    assert "code=invalid_value" in (error.info.detail or "")


async def test_wrong_key_is_auth_and_never_shown(
    fake: FakeOpenAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    wrong = "sk-wrong-key-abcdefghijklmnop"
    error = await _fail(_request(base_url, api_key=wrong), client)
    assert error.info.error_class is ErrorClass.AUTH
    assert "invalid_api_key" in (error.info.detail or "")
    assert wrong not in str(error.info.detail)
    assert "sk-wro" not in str(error.info.detail)


async def test_hanging_provider_times_out(
    fake: FakeOpenAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    started = time.perf_counter()
    error = await _fail(_request(base_url, prompt="x [openai:hang]", timeout_s=0.5), client)
    assert error.info.error_class is ErrorClass.TIMEOUT
    assert error.info.retryable
    assert time.perf_counter() - started < 3


async def test_connection_refused_is_provider_unavailable(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = await _fail(_request(f"http://127.0.0.1:{port}/v1"), client)
    assert error.info.error_class is ErrorClass.PROVIDER_UNAVAILABLE


# --- the schema, from both sides ---------------------------------------------------------


@needs_spec
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-image-1", "prompt": "x", "n": 0}, "n"),
        ({"model": "gpt-image-1", "prompt": "x", "n": 11}, "n"),
        ({"model": "gpt-image-1"}, "prompt"),
        ({"model": "gpt-image-1", "prompt": "x", "quality": "ultra"}, "quality"),
        ({"model": "gpt-image-1", "prompt": "x", "seed": 1}, "seed"),
        ({"model": "gpt-image-1", "prompt": "x", "negative_prompt": "y"}, "negative_prompt"),
    ],
)
async def test_fake_rejects_bodies_that_violate_the_schema(
    fake: FakeOpenAIState,
    base_url: str,
    client: httpx.AsyncClient,
    body: dict[str, Any],
    param: str,
) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}", RAW_HEADER: "1"}
    response = await client.post(f"{base_url}/images/generations", json=body, headers=headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": "dall-e-3", "n": 2},
        {"prompt": ""},
        {"options": {"quality": "ultra"}},
        {"options": {"output_compression": 101}},
        {"options": {"output_compression": "high"}},
    ],
)
async def test_adapter_never_sends_an_invalid_body(
    fake: FakeOpenAIState, base_url: str, client: httpx.AsyncClient, overrides: dict[str, Any]
) -> None:
    # Counted from here: a late request of an earlier test may still arrive.
    seen = len(fake.requests)
    error = await _fail(_request(base_url, **overrides), client)
    assert error.info.error_class is ErrorClass.INVALID_REQUEST
    assert fake.requests[seen:] == []


def test_max_images_per_call() -> None:
    assert ADAPTER.max_images_per_call("dall-e-3") == 1
    assert ADAPTER.max_images_per_call("dall-e-2") == 10
    assert ADAPTER.max_images_per_call("gpt-image-1") == 10


@pytest.mark.parametrize(
    ("marker", "stage"), [("moderation-input", "input"), ("moderation-output", "output")]
)
async def test_moderation_blocks_carry_the_providers_categories(
    fake: FakeOpenAIState, base_url: str, client: httpx.AsyncClient, marker: str, stage: str
) -> None:
    """GPT-image's `moderation_details` names the stage and the categories (issue 21, item 5)."""
    error = await _fail(_request(base_url, prompt=f"x [openai:{marker}]"), client)
    assert (error.info.stage, error.info.category) == (stage, "violence")
