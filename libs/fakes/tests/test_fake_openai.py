"""The fake OpenAI server answers in OpenAI's documented shapes, for success and failure."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from atelier_fakes import (
    DEFAULT_SPEC_PATH,
    MARKERS,
    FakeOpenAIState,
    create_openai_fake,
    run_fake_in_thread,
)

KEY = "sk-fake-suite-key-123456"
pytestmark = pytest.mark.skipif(
    not DEFAULT_SPEC_PATH.is_file(), reason="OpenAI OpenAPI document not present"
)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FakeOpenAIState]]:
    state = FakeOpenAIState(api_key=KEY, hang_s=0.2)
    base_url, stop = run_fake_in_thread(create_openai_fake(state))
    yield base_url, state
    stop()


@pytest.fixture
def http(server: tuple[str, FakeOpenAIState]) -> Iterator[httpx.Client]:
    base_url, state = server
    state.reset()
    with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as client:
        yield client


def _schema(name: str) -> Draft202012Validator:
    document = json.loads(DEFAULT_SPEC_PATH.read_text())
    return Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    )


def _post(http: httpx.Client, body: dict[str, Any], key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return http.post("/v1/images/generations", json=body, headers=headers)


def test_bundled_spec_matches_the_shared_reference() -> None:
    """The fake validates against a copy kept in the package; it must equal the reference."""
    assert DEFAULT_SPEC_PATH.is_file()
    shared = (
        Path(__file__).resolve().parents[3].parent / "shared/reference" / DEFAULT_SPEC_PATH.name
    )
    if not shared.is_file():
        pytest.skip("shared/reference/ is not beside this checkout")
    assert DEFAULT_SPEC_PATH.read_bytes() == shared.read_bytes()


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"model": "gpt-image-1", "prompt": "otter", "n": 2, "quality": "low"}, "b64_json"),
        ({"model": "dall-e-3", "prompt": "otter", "response_format": "b64_json"}, "b64_json"),
        ({"model": "dall-e-2", "prompt": "otter", "size": "256x256"}, "url"),  # url by default
        ({"model": "gpt-image-2", "prompt": "otter", "size": "1536x864", "n": None}, "b64_json"),
    ],
)
def test_success_matches_images_response(
    http: httpx.Client, body: dict[str, Any], key: str
) -> None:
    response = _post(http, body)
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"].startswith("req_")
    payload = response.json()
    assert not list(_schema("ImagesResponse").iter_errors(payload))
    assert len(payload["data"]) == (body.get("n") or 1)
    assert all(key in item for item in payload["data"])
    if key == "url":
        image = http.get(payload["data"][0]["url"])
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    "marker", sorted(set(MARKERS) - {"empty", "garbage-image", "hang", "expired-url", "502-html"})
)
def test_error_markers_match_error_response(http: httpx.Client, marker: str) -> None:
    response = _post(http, {"model": "gpt-image-1", "prompt": f"x [openai:{marker}]"})
    assert response.status_code >= 400
    assert not list(_schema("ErrorResponse").iter_errors(response.json()))
    assert response.headers["x-request-id"].startswith("req_")


def test_rate_limit_headers(http: httpx.Client) -> None:
    seconds = _post(http, {"model": "gpt-image-1", "prompt": "x [openai:429]"})
    assert seconds.headers["retry-after"] == "2"
    millis = _post(http, {"model": "gpt-image-1", "prompt": "x [openai:429-ms]"})
    assert millis.headers["retry-after-ms"] == "1500"


def test_moderation_stage_is_reported(http: httpx.Client) -> None:
    error = _post(http, {"model": "gpt-image-1", "prompt": "x [openai:moderation-output]"})
    body = error.json()["error"]
    assert body["code"] == "moderation_blocked"
    assert body["moderation_details"]["moderation_stage"] == "output"


def test_auth(http: httpx.Client) -> None:
    missing = _post(http, {"prompt": "x"}, key=None)
    wrong = _post(http, {"prompt": "x"}, key="sk-not-the-right-key-999")
    assert missing.status_code == wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert "sk-not-the-right-key-999" not in wrong.text  # masked, as OpenAI does


def test_model_rules(http: httpx.Client) -> None:
    assert _post(http, {"model": "dall-e-3", "prompt": "x", "n": 2}).status_code == 400
    assert _post(http, {"model": "dall-e-2", "prompt": "x", "size": "1792x1024"}).status_code == 400
    fmt = _post(http, {"model": "gpt-image-1", "prompt": "x", "response_format": "url"})
    assert fmt.json()["error"]["code"] == "unknown_parameter"
    assert (
        _post(http, {"model": "gpt-image-2", "prompt": "x", "size": "1000x1000"}).status_code == 400
    )


def test_records_every_body(http: httpx.Client, server: tuple[str, FakeOpenAIState]) -> None:
    _post(http, {"prompt": "one", "model": "gpt-image-1"})
    _post(http, {"prompt": "two", "n": 0})
    assert [body["prompt"] for body in server[1].bodies] == ["one", "two"]


def test_urls_expire(http: httpx.Client, server: tuple[str, FakeOpenAIState]) -> None:
    server[1].url_ttl_s = 0.2
    try:
        payload = _post(http, {"model": "dall-e-2", "prompt": "x", "size": "256x256"}).json()
    finally:
        server[1].url_ttl_s = 3600.0
    url = payload["data"][0]["url"]
    assert http.get(url).status_code == 200
    time.sleep(0.3)
    assert http.get(url).status_code == 410
    assert http.get("/files/nope").status_code == 404


def test_missing_spec_skips_validation_with_a_warning(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="not validating"):
        app = create_openai_fake(FakeOpenAIState(api_key=KEY, spec_path=tmp_path / "none.json"))
    base_url, stop = run_fake_in_thread(app)
    try:
        with httpx.Client(base_url=base_url, trust_env=False) as http:
            assert (
                _post(http, {"model": "gpt-image-1", "prompt": "x", "seed": 1}).status_code == 200
            )
    finally:
        stop()


def test_cli_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "atelier_fakes", "openai", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "--api-key" in result.stdout
    assert "[openai:429-ms]" in result.stdout
