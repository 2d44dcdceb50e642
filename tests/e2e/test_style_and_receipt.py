"""Issue 21, items 1 and 2, through every real process (ADR 0024): a project's style is kept by
context, applied to a generation and shown where it went, and left out on request; the estimate
equals what the submission then reserves; a job with one blocked and one landed image shows one
charged on its receipt, and the audit keeps the receipt."""

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
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        items = admin.get("/admin/v1/audits", params={"user": user_id}).json()["items"]
        if items:
            entry: dict[str, Any] = items[0]
            return entry
        time.sleep(0.2)
    raise AssertionError(f"no audit entry for {user_id} in {timeout_s} s")


@pytest.fixture(scope="module")
def profile_id(running_stack: RunningStack) -> str:
    with running_stack.admin() as admin:
        made = admin.post(
            "/admin/v1/profiles",
            json={
                "name": f"E2E style sketch {secrets.token_hex(3)}",
                "provider": "offline",
                "model": "offline-sketch",
                "sizes": ["256x256"],
                "default_size": "256x256",
                "counts": [1, 2],
                "max_reference_images": 2,
                "credit_cost": 1.5,
                "price_per_image_usd": 0.04,
                "options": [
                    {"name": "seed", "kind": "integer", "minimum": 0},
                    {"name": "delay_s", "kind": "number", "minimum": 0, "maximum": 5},
                ],
            },
        )
        assert made.status_code == 201, made.text
        return str(made.json()["id"])


def test_a_project_style_is_applied_shown_and_left_out_on_request(
    running_stack: RunningStack, profile_id: str
) -> None:
    user_id, project = f"style-user-{secrets.token_hex(4)}", f"style-{secrets.token_hex(4)}"
    token = running_stack.stack.mint_token(user_id, [project])
    with running_stack.user(token) as user:
        first = user.post(
            "/v1/generations",
            json={"project": project, "profile_id": profile_id, "prompt": "A harbour"},
        )
        assert first.status_code == 202, first.text
        [picture] = wait_final(user, first.json()["id"])["images"]

        empty = user.get(f"/v1/projects/{project}/style")
        assert empty.status_code == 200, empty.text
        assert empty.json()["version"] == 0
        assert user.get("/v1/projects/someone-else/style").status_code == 404

        style = {
            "text": "Muted watercolour, ink outlines",
            "reference_media_ids": [picture["media_id"]],
            "version": 0,
        }
        put = user.put(f"/v1/projects/{project}/style", json=style)
        assert put.status_code == 200, put.text
        assert put.json()["version"] == 1
        stale = user.put(f"/v1/projects/{project}/style", json={**style, "text": "Oil"})
        assert stale.status_code == 409
        assert stale.json()["error"]["code"] == "style_version_stale"
        foreign = user.put(
            f"/v1/projects/{project}/style",
            json={**style, "version": 1, "reference_media_ids": ["no-such-media"]},
        )
        assert foreign.status_code == 422
        assert foreign.json()["error"]["code"] == "style_image_unknown"

        body = {"project": project, "profile_id": profile_id, "prompt": "A lighthouse"}
        preview = user.post("/v1/context/preview", json=body).json()
        shown = preview["style"]
        assert shown["applied"] and shown["version"] == 1
        words = preview["prompt"][shown["prompt_start"] : shown["prompt_end"]]
        assert words == "Muted watercolour, ink outlines."
        assert shown["reference_media_ids"] == [picture["media_id"]]
        assert [r["style"] for r in preview["reference_images"]] == [True]

        styled = user.post("/v1/generations", json=body)
        job = wait_final(user, styled.json()["id"])
        assert job["status"] == "completed", job
        assert job["assembled_prompt"] == preview["prompt"]
        assert job["style"] == shown
        [sent] = job["reference_images"]
        assert sent["style"] and sent["media_id"] == picture["media_id"]

        plain = user.post("/v1/generations", json={**body, "apply_style": False})
        job = wait_final(user, plain.json()["id"])
        assert job["assembled_prompt"] == "A lighthouse"
        assert job["reference_images"] == []
        assert job["style"]["applied"] is False
        assert job["style"]["note"] == "The project style was left out on request."


def test_the_estimate_equals_the_reservation_and_the_receipt_charges_only_landed_images(
    running_stack: RunningStack, profile_id: str
) -> None:
    user_id, project = f"receipt-user-{secrets.token_hex(4)}", "receipt-project"
    token = running_stack.stack.mint_token(user_id, [project])
    with running_stack.admin() as admin, running_stack.user(token) as user:
        assert admin.put(
            f"/admin/v1/quotas/users/{user_id}", json={"credits_per_period": 10}
        ).is_success
        # Seeds 700 and 701 go to the two images; the offline provider blocks the second, and
        # takes a second over the first, so the reservation is read before it settles.
        body = {
            "project": project,
            "profile_id": profile_id,
            "prompt": "Two owls [fail:content_blocked:output@seed=701]",
            "count": 2,
            "options": {"seed": 700, "delay_s": 1.0},
        }
        estimate = user.post("/v1/generations/estimate", json=body)
        assert estimate.status_code == 200, estimate.text
        assert estimate.json()["credits"] == 3.0
        assert estimate.json()["money"] == {"amount": 0.08, "currency": "USD"}
        assert estimate.json()["fits"] is True
        # Nothing was reserved: all 10 credits are still there.
        assert admin.get(f"/admin/v1/quotas/users/{user_id}").json()["remaining"] == 10

        submitted = user.post("/v1/generations", json=body)
        assert submitted.status_code == 202, submitted.text
        reserved = admin.get(f"/admin/v1/quotas/users/{user_id}").json()
        assert 10 - reserved["remaining"] == estimate.json()["credits"]

        job = wait_final(user, submitted.json()["id"])
        assert job["status"] == "partial", job
        receipt = job["receipt"]
        assert [line["charged"] for line in receipt["images"]] == [True, False]
        blocked = receipt["images"][1]
        assert blocked["outcome"] == "blocked" and blocked["error_class"] == "content_blocked"
        assert receipt["charged_images"] == 1 and receipt["not_charged_images"] == 1
        assert receipt["credits_reserved"] == 3.0
        assert receipt["credits_charged"] == 1.5 and receipt["credits_refunded"] == 1.5

        audit = wait_audit(admin, user_id)
        assert audit["cost"] == receipt["credits_charged"]
        assert audit["receipt"] == receipt
        settled = admin.get(f"/admin/v1/quotas/users/{user_id}").json()
        assert settled["used"] == 1.5
