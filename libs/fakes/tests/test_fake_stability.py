"""The fake Stability API takes multipart only and answers in Stability's shapes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from atelier_fakes.server import run_fake_in_thread
from atelier_fakes.stability import MARKERS, FakeStabilityState, create_stability_fake

KEY = "sk-fake-stability-suite-000000"
_HTTP_200 = {"content-filtered", "garbage-image", "hang"}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    base_url, stop = run_fake_in_thread(create_stability_fake(FakeStabilityState(api_key=KEY)))
    with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as client:
        yield client
    stop()


def _post(http: httpx.Client, prompt: str, accept: str = "image/*") -> httpx.Response:
    return http.post(
        "/v2beta/stable-image/generate/core",
        files={"prompt": (None, prompt), "aspect_ratio": (None, "16:9")},
        headers={"Authorization": f"Bearer {KEY}", "Accept": accept},
    )


def test_image_answer_with_outcome_headers(http: httpx.Client) -> None:
    response = _post(http, "otter")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["finish-reason"] == "SUCCESS"
    assert int(response.headers["seed"]) > 0


def test_json_answer(http: httpx.Client) -> None:
    payload = _post(http, "otter", accept="application/json").json()
    assert set(payload) == {"image", "finish_reason", "seed"}


def test_content_filtered_is_a_200(http: httpx.Client) -> None:
    response = _post(http, "x [stability:content-filtered]")
    assert response.status_code == 200
    assert response.headers["finish-reason"] == "CONTENT_FILTERED"


@pytest.mark.parametrize("marker", sorted(set(MARKERS) - _HTTP_200))
def test_error_markers_use_stabilitys_error_shape(http: httpx.Client, marker: str) -> None:
    response = _post(http, f"x [stability:{marker}]")
    assert response.status_code >= 400
    assert set(response.json()) == {"id", "name", "errors"}


def test_json_bodies_and_unknown_fields_are_refused(http: httpx.Client) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    url = "/v2beta/stable-image/generate/core"
    assert http.post(url, json={"prompt": "x"}, headers=headers).status_code == 400
    unknown = http.post(url, files={"prompt": (None, "x"), "n": (None, "2")}, headers=headers)
    assert unknown.status_code == 400 and unknown.json()["name"] == "bad_request"


def test_cli_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "atelier_fakes", "stability", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "[stability:content-filtered]" in result.stdout
