"""The fake BFL API runs the submit → poll → sample state machine with expiring URLs."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from atelier_fakes.bfl import FakeBFLState, create_bfl_fake
from atelier_fakes.server import run_fake_in_thread

KEY = "bfl-fake-suite-key-0000000000"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[httpx.Client, FakeBFLState]]:
    state = FakeBFLState(api_key=KEY, pending_s=0.2, url_ttl_s=0.5)
    base_url, stop = run_fake_in_thread(create_bfl_fake(state))
    with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as client:
        yield client, state
    stop()


def _submit(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post("/v1/flux-2-pro", json={"prompt": "otter", **body}, headers={"x-key": KEY})


def _poll_until_done(http: httpx.Client, url: str) -> dict[str, Any]:
    for _ in range(100):
        payload: dict[str, Any] = http.get(url, headers={"x-key": KEY}).json()
        if payload["status"] != "Pending":
            return payload
        time.sleep(0.05)
    raise AssertionError("still Pending")


def test_state_machine_and_expiring_sample(server: tuple[httpx.Client, FakeBFLState]) -> None:
    http, state = server
    submitted = _submit(http, width=512, height=512).json()
    assert set(submitted) >= {"id", "polling_url"}
    first = http.get(submitted["polling_url"], headers={"x-key": KEY}).json()
    assert first["status"] == "Pending"
    ready = _poll_until_done(http, submitted["polling_url"])
    assert ready["status"] == "Ready"
    sample = ready["result"]["sample"]
    assert http.get(sample).status_code == 200
    time.sleep(0.6)
    assert http.get(sample).status_code == 410
    assert len(state.submissions) >= 1


@pytest.mark.parametrize(
    ("marker", "status"),
    [
        ("request-moderated", "Request Moderated"),
        ("content-moderated", "Content Moderated"),
        ("error", "Error"),
        ("task-not-found", "Task not found"),
    ],
)
def test_terminal_statuses(
    server: tuple[httpx.Client, FakeBFLState], marker: str, status: str
) -> None:
    http, _ = server
    submitted = _submit(http, prompt=f"x [bfl:{marker}]").json()
    assert _poll_until_done(http, submitted["polling_url"])["status"] == status


def test_validation_and_auth(server: tuple[httpx.Client, FakeBFLState]) -> None:
    http, _ = server
    bad = _submit(http, width=1000)
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "width"]
    extra = _submit(http, negative_prompt="fog")
    assert extra.json()["detail"][0]["type"] == "extra_forbidden"
    assert http.post("/v1/flux-2-pro", json={"prompt": "x"}).status_code == 403
    limited = _submit(http, prompt="x [bfl:429]")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"


def test_cli_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "atelier_fakes", "bfl", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "[bfl:content-moderated]" in result.stdout
