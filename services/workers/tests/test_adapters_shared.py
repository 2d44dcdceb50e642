"""The helpers every HTTP adapter shares (`adapters/_http.py`, `adapters/sizes.py`)."""

from __future__ import annotations

import pytest

from atelier_contracts.errors import ErrorClass
from atelier_workers.adapters import ImageRequest, ProviderError
from atelier_workers.adapters._http import (
    PollFailures,
    basic_or_bearer,
    key_secrets,
    poll_interval,
    retry_after_of,
)
from atelier_workers.adapters.sizes import (
    GEMINI_ASPECT_RATIOS,
    WIDE_ASPECT_RATIOS,
    nearest_aspect_ratio,
    ratio_and_tier,
    resolution_tier,
)


def test_retry_after_parsing() -> None:
    assert retry_after_of({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_of({"retry-after": "3"}) == 3.0
    assert retry_after_of({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_of({"retry-after": "soon"}) is None
    assert retry_after_of({}) is None


def test_nearest_aspect_ratio_and_tier() -> None:
    ratios = ("1:1", "16:9", "9:16")
    assert nearest_aspect_ratio(1000, 1000, ratios) == "1:1"
    assert nearest_aspect_ratio(3000, 1000, ratios) == "16:9"
    assert nearest_aspect_ratio(1000, 3000, ratios) == "9:16"
    assert nearest_aspect_ratio(832, 1216, WIDE_ASPECT_RATIOS) == "2:3"
    assert nearest_aspect_ratio(2560, 1080, WIDE_ASPECT_RATIOS) == "21:9"
    assert resolution_tier(1024, 1024) == "1K"
    assert resolution_tier(2048, 2048) == "2K"
    assert resolution_tier(4096, 2304) == "4K"  # 3840x2160 is just nearer 2K
    assert resolution_tier(4096, 4096) == "4K"


def test_ratio_and_tier_honour_pinned_options() -> None:
    assert ratio_and_tier("2560x1440", GEMINI_ASPECT_RATIOS, {}) == ("16:9", "2K")
    pinned = {"aspect_ratio": "1:1", "image_size": "4K"}
    assert ratio_and_tier("1920x1080", GEMINI_ASPECT_RATIOS, pinned) == ("1:1", "4K")
    for options in ({"aspect_ratio": "7:3"}, {"image_size": "8K"}):
        with pytest.raises(ProviderError) as caught:
            ratio_and_tier("1024x1024", GEMINI_ASPECT_RATIOS, options)
        assert caught.value.error_class is ErrorClass.INVALID_REQUEST


def test_poll_interval_is_checked() -> None:
    assert poll_interval({}, 0.5) == 0.5
    assert poll_interval({"poll_interval_s": "2"}, 0.5) == 2.0
    for bad in (0, -1, "often", None):
        with pytest.raises(ProviderError):
            poll_interval({"poll_interval_s": bad}, 0.5)


def test_self_hosted_credentials() -> None:
    basic = ImageRequest(model="m", prompt="p", size="64x64", api_key="user:secret-pass")
    assert basic_or_bearer(basic)["Authorization"].startswith("Basic ")
    assert key_secrets(basic) == ("user:secret-pass", "secret-pass")
    token = ImageRequest(model="m", prompt="p", size="64x64", api_key="tok-123456")
    assert basic_or_bearer(token) == {"Authorization": "Bearer tok-123456"}
    assert basic_or_bearer(ImageRequest(model="m", prompt="p", size="64x64")) == {}


def test_poll_failures_ride_out_only_transient_hiccups() -> None:
    failures = PollFailures()
    hiccup = ProviderError.of(ErrorClass.PROVIDER_UNAVAILABLE, "502")
    failures.failed(hiccup)
    failures.failed(hiccup)
    failures.succeeded()
    failures.failed(hiccup)
    with pytest.raises(ProviderError):
        failures.failed(ProviderError.of(ErrorClass.AUTH, "401"))
    failures.succeeded()
    failures.failed(hiccup)
    failures.failed(hiccup)
    with pytest.raises(ProviderError):
        failures.failed(hiccup)


async def test_progress_is_clamped_and_a_failing_hook_never_fails_the_call() -> None:
    seen: list[tuple[float | None, str | None]] = []

    async def listen(fraction: float | None, detail: str | None) -> None:
        seen.append((fraction, detail))
        raise RuntimeError("the listener broke")

    request = ImageRequest(model="m", prompt="p", size="64x64", on_progress=listen)
    await request.report_progress(1.5, "almost")
    await request.report_progress(None, "queued")
    assert seen == [(1.0, "almost"), (None, "queued")]
    await ImageRequest(model="m", prompt="p", size="64x64").report_progress(0.5, "nobody")
