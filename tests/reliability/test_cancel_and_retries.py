"""Cancel and retries on the real stack (the shared session stack of tests/conftest.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e

FINAL = {"completed", "partial", "failed", "cancelled"}


def _wait(
    client: httpx.Client, job_id: str, until: set[str], timeout_s: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/generations/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {until}")


def _submit(stack: RunningStack, client: httpx.Client, **body: Any) -> str:
    payload = {
        "project": "demo-project",
        "profile_id": stack.info.profile_id,
        "count": 1,
        "prompt": "cancel me",
        **body,
    }
    response = client.post("/v1/generations", json=payload)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _job_media(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    items = client.get("/v1/projects/demo-project/media", params={"limit": 500}).json()["items"]
    return [m for m in items if m.get("job_id") == job_id]


@pytest.mark.parametrize("stage", ["queued", "generating"])
def test_cancel_stops_the_job_and_nothing_lands_later(
    running_stack: RunningStack, stage: str
) -> None:
    with running_stack.user() as user:
        job_id = _submit(running_stack, user, count=2, options={"delay_s": 3})
        if stage == "generating":
            _wait(user, job_id, {"generating"})
        response = user.post(f"/v1/generations/{job_id}/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        assert response.json()["error"]["class"] == "cancelled"
        time.sleep(4)  # past the provider's delay: a late result would have landed by now
        job = user.get(f"/v1/generations/{job_id}").json()
        assert job["status"] == "cancelled"
        assert job["images"] == []
        assert _job_media(user, job_id) == []


def test_cancel_is_idempotent_and_checks_access(running_stack: RunningStack) -> None:
    with running_stack.user() as user:
        job_id = _submit(running_stack, user)
        _wait(user, job_id, FINAL)
        finished = user.post(f"/v1/generations/{job_id}/cancel")
        assert finished.status_code == 200
        assert finished.json()["status"] == "completed"  # too late to cancel: unchanged
    with running_stack.user(running_stack.info.second_user_token) as other:
        assert other.post(f"/v1/generations/{job_id}/cancel").status_code == 404


def test_retryable_provider_errors_are_retried_a_bounded_number_of_times(
    running_stack: RunningStack,
) -> None:
    with running_stack.admin() as admin:
        created = admin.post(
            "/admin/v1/profiles",
            json={
                "name": "Retry OpenAI",
                "provider": "openai",
                "model": "gpt-image-1",
                "sizes": ["1024x1024"],
                "default_size": "1024x1024",
                "counts": [1],
                "base_url": f"{running_stack.openai_url}/v1",
                "timeout_s": 30,
            },
        )
        assert created.status_code == 201, created.text
        profile_id = created.json()["id"]
    with running_stack.user() as user:
        before = len(running_stack.openai.requests)
        job_id = _submit(running_stack, user, profile_id=profile_id, prompt="[openai:500] owl")
        job = _wait(user, job_id, FINAL)
    assert job["status"] == "failed"
    assert job["error"]["class"] == "provider_unavailable"
    assert "unavailable" in job["error"]["message"]
    attempts = [r for r in running_stack.openai.requests[before:] if "owl" in str(r.body)]
    assert len(attempts) == 3  # the default bound: three tries, then a clear failure


def test_blocked_content_is_never_retried(running_stack: RunningStack) -> None:
    with running_stack.user() as user:
        before = len(running_stack.openai.requests)
        profiles = user.get("/v1/features").json()["profiles"]
        openai = next(p for p in profiles if p["provider"] == "openai")
        job_id = _submit(
            running_stack,
            user,
            profile_id=openai["id"],
            prompt="[openai:moderation-output] heron",
            count=1,
        )
        job = _wait(user, job_id, FINAL)
    assert job["status"] == "failed" and job["error"]["class"] == "content_blocked"
    assert len([r for r in running_stack.openai.requests[before:] if "heron" in str(r.body)]) == 1


def test_fifty_parallel_identical_requests_make_one_job(running_stack: RunningStack) -> None:
    import concurrent.futures

    body = {
        "project": "demo-project",
        "profile_id": running_stack.info.profile_id,
        "prompt": "once only",
        "count": 1,
    }

    def submit(_: int) -> tuple[int, str]:
        with running_stack.user() as user:
            response = user.post(
                "/v1/generations", json=body, headers={"Idempotency-Key": "parallel-once-only"}
            )
            return response.status_code, response.json()["id"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=25) as pool:
        results = list(pool.map(submit, range(50)))
    assert {status for status, _ in results} <= {200, 202}
    ids = {job_id for _, job_id in results}
    assert len(ids) == 1
    with running_stack.user() as user:
        job = _wait(user, ids.pop(), FINAL)
        assert job["status"] == "completed" and len(job["images"]) == 1
        assert len(_job_media(user, job["id"])) == 1
