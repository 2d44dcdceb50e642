"""The fake Workers AI answers raw bytes or `{result, success, errors}` like Cloudflare."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from atelier_fakes.server import run_fake_in_thread
from atelier_fakes.workersai import MARKERS, FakeWorkersAIState, create_workersai_fake

KEY = "cf-fake-suite-token-00000000000"
ACCOUNT = "abcabcabcabcabcabcabcabcabcabcab"
RUN = f"/client/v4/accounts/{ACCOUNT}/ai/run"
_HTTP_200 = {"empty", "garbage-image", "hang", "200-failure"}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    state = FakeWorkersAIState(api_key=KEY, account_id=ACCOUNT)
    base_url, stop = run_fake_in_thread(create_workersai_fake(state))
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=base_url, trust_env=False, timeout=10, headers=headers) as client:
        yield client
    stop()


def test_raw_bytes_json_and_multipart_models(http: httpx.Client) -> None:
    raw = http.post(f"{RUN}/@cf/stabilityai/stable-diffusion-xl-base-1.0", json={"prompt": "o"})
    assert raw.headers["content-type"] == "image/png"
    schnell = http.post(f"{RUN}/@cf/black-forest-labs/flux-1-schnell", json={"prompt": "o"})
    assert schnell.json()["success"] is True and schnell.json()["result"]["image"]
    flux2 = f"{RUN}/@cf/black-forest-labs/flux-2-dev"
    assert http.post(flux2, json={"prompt": "o"}).status_code == 400
    assert http.post(flux2, files={"prompt": (None, "o")}).status_code == 200


@pytest.mark.parametrize("marker", sorted(set(MARKERS) - _HTTP_200))
def test_error_markers_use_cloudflares_error_shape(http: httpx.Client, marker: str) -> None:
    url = f"{RUN}/@cf/stabilityai/stable-diffusion-xl-base-1.0"
    response = http.post(url, json={"prompt": f"x [workersai:{marker}]"})
    assert response.status_code >= 400
    payload = response.json()
    assert payload["success"] is False
    assert {"code", "message"} <= set(payload["errors"][0])


def test_auth_and_account(http: httpx.Client) -> None:
    url = f"{RUN}/@cf/stabilityai/stable-diffusion-xl-base-1.0"
    denied = http.post(url, json={"prompt": "x"}, headers={"Authorization": "Bearer nope"})
    assert denied.status_code == 401 and denied.json()["errors"][0]["code"] == 10000
    elsewhere = http.post(url.replace(ACCOUNT, "other"), json={"prompt": "x"})
    assert elsewhere.json()["errors"][0]["code"] == 7003


def test_cli_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "atelier_fakes", "workersai", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "[workersai:capacity]" in result.stdout
