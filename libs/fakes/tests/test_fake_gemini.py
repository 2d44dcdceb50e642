"""The fake Gemini server answers in the Gemini API's shapes, for success and failure."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from atelier_fakes.gemini import MARKERS, FakeGeminiState, create_gemini_fake
from atelier_fakes.server import run_fake_in_thread

KEY = "AIzaFakeSuiteKey-0000000000000000000"
PATH = "/v1beta/models/gemini-3-pro-image-preview:generateContent"
_SAFETY_200 = {
    "block-prompt",
    "image-safety",
    "image-prohibited",
    "recitation",
    "no-image",
    "image-other",
    "text-only",
    "thought-image",
    "garbage-image",
    "hang",
}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    base_url, stop = run_fake_in_thread(create_gemini_fake(FakeGeminiState(api_key=KEY)))
    with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as client:
        yield client
    stop()


def _post(http: httpx.Client, prompt: str, key: str | None = KEY, **config: Any) -> httpx.Response:
    body = {
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], **config},
    }
    headers = {"x-goog-api-key": key} if key else {}
    return http.post(PATH, json=body, headers=headers)


def test_success_has_an_inline_image_part(http: httpx.Client) -> None:
    response = _post(http, "otter", imageConfig={"aspectRatio": "16:9", "imageSize": "1K"})
    assert response.status_code == 200
    parts = response.json()["candidates"][0]["content"]["parts"]
    images = [p["inlineData"] for p in parts if "inlineData" in p]
    assert images and images[0]["mimeType"] == "image/png"
    assert base64.b64decode(images[0]["data"]).startswith(b"\x89PNG")


@pytest.mark.parametrize("marker", sorted(set(MARKERS) - _SAFETY_200))
def test_error_markers_use_googles_error_shape(http: httpx.Client, marker: str) -> None:
    response = _post(http, f"x [gemini:{marker}]")
    assert response.status_code >= 400
    error = response.json()["error"]
    assert set(error) >= {"code", "message", "status"}
    assert error["code"] == response.status_code


def test_rate_limit_carries_retry_info(http: httpx.Client) -> None:
    details = _post(http, "x [gemini:429]").json()["error"]["details"]
    retry = [d for d in details if d["@type"].endswith("RetryInfo")]
    assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]


def test_safety_outcomes_are_http_200(http: httpx.Client) -> None:
    blocked = _post(http, "x [gemini:block-prompt]")
    assert blocked.status_code == 200
    assert blocked.json()["promptFeedback"]["blockReason"] == "PROHIBITED_CONTENT"
    unsafe = _post(http, "x [gemini:image-safety]").json()
    assert unsafe["candidates"][0]["finishReason"] == "IMAGE_SAFETY"


def test_auth_and_unknown_fields(http: httpx.Client) -> None:
    assert _post(http, "x", key=None).json()["error"]["status"] == "PERMISSION_DENIED"
    wrong = _post(http, "x", key="AIzaWrong").json()["error"]
    assert wrong["details"][0]["reason"] == "API_KEY_INVALID"
    unknown = _post(http, "x", seed=1)
    assert unknown.status_code == 400
    assert "Unknown name" in unknown.json()["error"]["message"]


def test_cli_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "atelier_fakes", "gemini", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "[gemini:image-safety]" in result.stdout
