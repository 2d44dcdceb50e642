"""A profile's fallback chain through every real process (issue 16): the gateway plans it at
submission, dispatch moves the task when the provider refuses, the job shows which profile made
the image and why, the credits settle at that profile's price, and the audit records it."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.e2e.jobs import wait_final

if TYPE_CHECKING:
    from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e


def wait_audit(admin: httpx.Client, user_id: str, timeout_s: float = 30) -> dict[str, Any]:
    """Settlement and the audit follow the final status event a moment after the job ends."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        items = admin.get("/admin/v1/audits", params={"user": user_id}).json()["items"]
        if items:
            entry: dict[str, Any] = items[0]
            return entry
        time.sleep(0.2)
    raise AssertionError(f"no audit entry for {user_id} in {timeout_s} s")


def test_a_refused_key_falls_back_and_the_fallback_is_charged(
    running_stack: RunningStack,
) -> None:
    user_id, project = f"fallback-user-{secrets.token_hex(4)}", "fallback-project"
    token = running_stack.stack.mint_token(user_id, [project])
    tag = secrets.token_hex(3)
    with running_stack.admin() as admin, running_stack.user(token) as user:
        spare = admin.post(
            "/admin/v1/profiles",
            json={
                "name": f"E2E spare sketch {tag}",
                "provider": "offline",
                "model": "offline-sketch",
                "sizes": ["256x256", "512x512"],
                "default_size": "256x256",
                "credit_cost": 0.5,
            },
        )
        assert spare.status_code == 201, spare.text
        own = admin.post(
            "/admin/v1/profiles",
            json={
                "name": f"E2E OpenAI {tag}",
                "provider": "openai",
                "model": "gpt-image-1",
                "sizes": ["1024x1024"],
                "default_size": "1024x1024",
                "options": [{"name": "quality", "values": ["low", "high"], "default": "low"}],
                "credit_cost": 2,
                "base_url": f"{running_stack.openai_url}/v1",
                "fallback_profile_id": spare.json()["id"],
            },
        )
        assert own.status_code == 201, own.text
        assert admin.put(
            f"/admin/v1/quotas/users/{user_id}", json={"credits_per_period": 10}
        ).is_success

        # The fake OpenAI refuses the key for this prompt; the offline spare draws it.
        submitted = user.post(
            "/v1/generations",
            json={"project": project, "profile_id": own.json()["id"], "prompt": "Owl [openai:401]"},
        )
        assert submitted.status_code == 202, submitted.text
        job = wait_final(user, submitted.json()["id"])
        assert job["status"] == "completed", job
        [image] = job["images"]
        assert image["profile_id"] == spare.json()["id"]
        assert image["profile_name"] == f"E2E spare sketch {tag}"
        assert image["credit_cost"] == 0.5
        reason = image["fallback_reason"]
        assert reason and "auth" in reason and f"E2E OpenAI {tag}" in reason, reason
        # Planned at submission: the spare's size nearest 1024x1024, its lack of `quality`.
        assert (image["width"], image["height"]) == (512, 512)
        assert "has no option 'quality'" in reason

        entry = wait_audit(admin, user_id)
        assert entry["cost"] == 0.5
        [fallback] = entry["fallbacks"]
        assert fallback["profile_id"] == spare.json()["id"] and fallback["reason"] == reason
        used = admin.get(f"/admin/v1/quotas/users/{user_id}").json()["used"]
        assert used == 0.5
