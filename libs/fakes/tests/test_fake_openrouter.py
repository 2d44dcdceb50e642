"""The fake OpenRouter answers in OpenRouter's shapes: chat images, images API, errors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from atelier_fakes.openrouter import MARKERS, FakeOpenRouterState, create_openrouter_fake
from atelier_fakes.server import run_fake_in_thread

KEY = "sk-or-v1-fake-suite-key-000000"
_HTTP_200 = {
    "200-error",
    "200-error-top",
    "empty",
    "text-only",
    "content-filter",
    "url-result",
    "expired-url",
    "garbage-image",
    "hang",
}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    base_url, stop = run_fake_in_thread(create_openrouter_fake(FakeOpenRouterState(api_key=KEY)))
    with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as client:
        yield client
    stop()


def _chat(http: httpx.Client, prompt: str, **extra: Any) -> httpx.Response:
    body = {
        "model": "google/gemini-2.5-flash-image",
        "messages": [{"role": "user", "content": prompt}],
        "modalities": ["image", "text"],
        **extra,
    }
    return http.post(
        "/api/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    )


def test_chat_success_has_data_url_images(http: httpx.Client) -> None:
    payload = _chat(http, "otter").json()
    [image] = payload["choices"][0]["message"]["images"]
    assert image["type"] == "image_url"
    assert image["image_url"]["url"].startswith("data:image/png;base64,")


def test_images_api_success(http: httpx.Client) -> None:
    body = {"model": "openai/gpt-image-1", "prompt": "otter", "n": 2, "aspect_ratio": "1:1"}
    response = http.post("/api/v1/images", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200
    assert len(response.json()["data"]) == 2
    single = {**body, "model": "google/gemini-2.5-flash-image"}
    refused = http.post("/api/v1/images", json=single, headers={"Authorization": f"Bearer {KEY}"})
    assert refused.status_code == 400


@pytest.mark.parametrize("marker", sorted(set(MARKERS) - _HTTP_200))
def test_error_markers_use_openrouters_error_shape(http: httpx.Client, marker: str) -> None:
    response = _chat(http, f"x [openrouter:{marker}]")
    assert response.status_code == int(marker.split("-")[0])
    error = response.json()["error"]
    assert error["code"] == response.status_code and error["message"]


def test_errors_inside_a_200(http: httpx.Client) -> None:
    in_choice = _chat(http, "x [openrouter:200-error]")
    assert in_choice.status_code == 200
    assert in_choice.json()["choices"][0]["error"]["code"] == 502
    top = _chat(http, "x [openrouter:200-error-top]")
    assert top.status_code == 200 and top.json()["error"]["code"] == 429


def test_auth_and_unknown_fields(http: httpx.Client) -> None:
    response = http.post("/api/v1/chat/completions", json={"model": "a/b", "messages": []})
    assert response.status_code == 401
    assert _chat(http, "x", temperature_of_doom=1).status_code == 400


def test_cli_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "atelier_fakes", "openrouter", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "[openrouter:200-error]" in result.stdout
