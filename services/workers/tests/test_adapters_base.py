"""Shared adapter plumbing: image sniffing, redaction, the registry."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from atelier_contracts.errors import ErrorClass
from atelier_workers.adapters import (
    ADAPTERS,
    ImageRequest,
    OfflineAdapter,
    OpenAIAdapter,
    ProviderError,
    UnknownProviderError,
    get_adapter,
    image_size_of,
)
from atelier_workers.adapters.base import MAX_IMAGE_PIXELS, parse_size, redact


def _encoded(fmt: str, size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_image_size_of_reads_type_and_size(fmt: str, content_type: str) -> None:
    assert image_size_of(_encoded(fmt)) == (content_type, 40, 30)


@pytest.mark.parametrize("data", [b"", b"<html>502</html>", _encoded("PNG")[:60]])
def test_image_size_of_refuses_non_images(data: bytes) -> None:
    with pytest.raises(ProviderError) as caught:
        image_size_of(data)
    assert caught.value.error_class is ErrorClass.NO_IMAGE_RETURNED


def test_pixel_limit_is_set_deliberately() -> None:
    assert Image.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS


def test_parse_size() -> None:
    assert parse_size("1536x1024") == (1536, 1024)
    for bad in ("auto", "1024", "0x10", "99999x99999"):
        with pytest.raises(ProviderError) as caught:
            parse_size(bad)
        assert caught.value.error_class is ErrorClass.INVALID_REQUEST


def test_redact_removes_given_secret_and_key_shapes() -> None:
    text = redact("key my-long-secret-value and sk-abc***wxyz here", "my-long-secret-value")
    assert "my-long-secret-value" not in text
    assert "sk-abc" not in text
    assert text.count("[redacted]") == 2


def test_provider_error_carries_plain_message_and_detail() -> None:
    error = ProviderError.of(ErrorClass.RATE_LIMITED, "429 from upstream", retry_after_s=2.0)
    assert error.info.error_class is ErrorClass.RATE_LIMITED
    assert error.info.message == "The image provider is busy right now; try again in a moment."
    assert error.info.detail == "429 from upstream"
    assert error.info.retry_after_s == 2.0
    assert error.info.retryable


def test_request_repr_hides_the_api_key() -> None:
    request = ImageRequest(model="m", prompt="p", size="8x8", n=1, api_key="sk-secret-123456")
    assert "sk-secret-123456" not in repr(request)


def test_registry() -> None:
    from atelier_contracts.providers import KNOWN_PROVIDERS

    # The app's names (openai, openrouter, falai, stable-diffusion, workersai) and the rest.
    assert set(ADAPTERS) == set(KNOWN_PROVIDERS)
    assert {
        "offline",
        "openai",
        "openrouter",
        "falai",
        "stable-diffusion",
        "workersai",
        "comfyui",
        "gemini",
        "replicate",
        "bfl",
        "stability",
    } <= set(ADAPTERS)
    assert isinstance(get_adapter("offline"), OfflineAdapter)
    assert isinstance(get_adapter("openai"), OpenAIAdapter)
    assert all(name == adapter.name for name, adapter in ADAPTERS.items())


def test_unknown_provider_is_a_clear_key_error() -> None:
    with pytest.raises(KeyError) as caught:
        get_adapter("midjourney")
    assert isinstance(caught.value, UnknownProviderError)
    assert "midjourney" in str(caught.value)
    assert "offline" in str(caught.value)


def test_an_input_block_names_the_prompt_only_when_the_call_carried_nothing_else() -> None:
    from atelier_contracts.errors import BlockedInput
    from atelier_workers.adapters.base import ImageRequest, ReferenceImage, moderation_category
    from atelier_workers.service import blocked_input_of

    blocked = ProviderError.of(ErrorClass.CONTENT_BLOCKED, "no", stage="input").info
    plain = ImageRequest(model="m", prompt="p", size="64x64")
    assert blocked_input_of(blocked, plain).input == BlockedInput(kind="prompt")
    picture = ReferenceImage(b"x", "image/png", 1, 1, element_id="hero")
    with_reference = ImageRequest(model="m", prompt="p", size="64x64", reference_images=(picture,))
    assert blocked_input_of(blocked, with_reference).input is None  # unknown, not guessed
    output = ProviderError.of(ErrorClass.CONTENT_BLOCKED, "no", stage="output").info
    assert blocked_input_of(output, plain).input is None
    assert moderation_category(["Violence", "violence", 3, " SEXUAL "]) == "violence,sexual"
    assert moderation_category([]) is None
