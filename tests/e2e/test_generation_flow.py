"""One durable generation, end to end, through every real process."""

from __future__ import annotations

import io
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from PIL import Image

from tests.e2e.jobs import FINAL, wait_final

if TYPE_CHECKING:
    from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e


def read_sse(client: httpx.Client, path: str, timeout_s: float = 90) -> list[dict[str, Any]]:
    """Collect `status` events until the job reaches a final state (the server then closes)."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    with client.stream("GET", path, timeout=timeout_s) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        data: list[str] = []
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                raise AssertionError(f"no final status within {timeout_s} s: {events}")
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                events.append(json.loads("\n".join(data)))
                data = []
                if events[-1]["status"] in FINAL:
                    break
    return events


def test_admin_profile_then_four_images_land(running_stack: RunningStack) -> None:
    with running_stack.admin() as admin:
        created = admin.post(
            "/admin/v1/profiles",
            json={
                "name": "E2E sketch",
                "provider": "offline",
                "model": "offline-sketch",
                "sizes": ["320x240", "512x512"],
                "default_size": "320x240",
                "counts": [1, 2, 4],
                "options": [{"name": "seed", "kind": "integer", "minimum": 0}],
            },
        )
        assert created.status_code == 201, created.text
        profile_id = created.json()["id"]

    with running_stack.user() as user:
        features = user.get("/v1/features").json()
        assert features["enabled"] is True
        assert profile_id in [p["id"] for p in features["profiles"]]

        submitted = user.post(
            "/v1/generations",
            json={
                "project": "demo-project",
                "profile_id": profile_id,
                "prompt": "A red lighthouse",
                "count": 4,
                "options": {"seed": 42},
                "context": {
                    "elements": [
                        {
                            "id": "e1",
                            "name": "Mara",
                            "type": "character",
                            "description": "A smuggler",
                            "data": {"eyes": "green"},
                            "send": {"image": False, "description": True, "data": False},
                        }
                    ]
                },
            },
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]

        events = read_sse(user, f"/v1/generations/{job_id}/events")
        stages = [e["status"] for e in events]
        assert stages[-1] == "completed", stages
        # Whatever the timing of the connection, the stream ends with the late stages.
        assert "generating" in stages or len(stages) >= 1

        job = user.get(f"/v1/generations/{job_id}").json()
        assert job["status"] == "completed"
        assert job["assembled_prompt"].startswith("A red lighthouse")
        assert "Mara (character): A smuggler." in job["assembled_prompt"]
        assert len(job["images"]) == 4
        assert sorted(i["index"] for i in job["images"]) == [0, 1, 2, 3]

        for image in job["images"]:
            original = user.get(f"/v1/media/{image['media_id']}/content")
            assert original.status_code == 200
            picture = Image.open(io.BytesIO(original.content))
            assert picture.size == (320, 240)
            thumbnail = user.get(f"/v1/media/{image['media_id']}/thumbnail")
            assert thumbnail.status_code == 200
            thumb = Image.open(io.BytesIO(thumbnail.content))
            assert thumb.format == "WEBP"
            assert max(thumb.size) <= 256

        library = user.get("/v1/projects/demo-project/media").json()
        assert {i["media_id"] for i in job["images"]} <= {m["id"] for m in library["items"]}
        active = user.get("/v1/projects/demo-project/generations", params={"active": "true"})
        assert job_id not in [j["id"] for j in active.json()["jobs"]]


def test_sse_stream_shows_each_stage_when_connected_early(running_stack: RunningStack) -> None:
    profile_id = running_stack.info.profile_id
    with running_stack.user() as user:
        submitted = user.post(
            "/v1/generations",
            json={
                "project": "demo-project",
                "profile_id": profile_id,
                "prompt": "Slow harbour",
                "count": 1,
                "options": {"delay_s": 1.5},
            },
        )
        assert submitted.status_code == 202, submitted.text
        events = read_sse(user, f"/v1/generations/{submitted.json()['id']}/events")
    stages = [e["status"] for e in events]
    assert stages[-1] == "completed"
    # What a person sees (ADR 0018): being made, then done; no "landing" step of its own.
    for stage in ("generating", "completed"):
        assert stage in stages, stages
    assert "landing" not in stages and "dispatched" not in stages


def test_openai_profile_through_the_fake_provider(running_stack: RunningStack) -> None:
    with running_stack.admin() as admin:
        created = admin.post(
            "/admin/v1/profiles",
            json={
                "name": "E2E OpenAI",
                "provider": "openai",
                "model": "gpt-image-1",
                "sizes": ["1024x1024"],
                "default_size": "1024x1024",
                "counts": [1, 2],
                "base_url": f"{running_stack.openai_url}/v1",
                "options": [
                    {"name": "quality", "kind": "enum", "values": ["low", "high"], "default": "low"}
                ],
            },
        )
        assert created.status_code == 201, created.text
        profile_id = created.json()["id"]
    with running_stack.user() as user:
        ok = user.post(
            "/v1/generations",
            json={
                "project": "demo-project",
                "profile_id": profile_id,
                "prompt": "An owl",
                "count": 2,
            },
        )
        assert ok.status_code == 202, ok.text
        job = wait_final(user, ok.json()["id"])
        assert job["status"] == "completed", job
        assert len(job["images"]) == 2
        sent = running_stack.openai.bodies[-1]
        assert sent["n"] == 2 and sent["quality"] == "low" and sent["model"] == "gpt-image-1"

        blocked = user.post(
            "/v1/generations",
            json={
                "project": "demo-project",
                "profile_id": profile_id,
                "prompt": "[openai:moderation-input] something",
                "count": 1,
            },
        )
        assert blocked.status_code == 202
        failed = wait_final(user, blocked.json()["id"])
        assert failed["status"] == "failed"
        assert failed["error"]["class"] == "content_blocked"
        assert "refused" in failed["error"]["message"]
        assert running_stack.openai.api_key not in json.dumps(failed)


def test_failed_provider_ends_the_job_failed_with_a_plain_message(
    running_stack: RunningStack,
) -> None:
    with running_stack.user() as user:
        submitted = user.post(
            "/v1/generations",
            json={
                "project": "demo-project",
                "profile_id": running_stack.info.profile_id,
                "prompt": "[fail:content_blocked] nope",
                "count": 2,
            },
        )
        assert submitted.status_code == 202
        job = wait_final(user, submitted.json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["class"] == "content_blocked"
    assert job["progress"]["failed"] == 2


def test_users_see_nothing_of_other_projects(running_stack: RunningStack) -> None:
    with running_stack.user() as user:
        submitted = user.post(
            "/v1/generations",
            json={
                "project": "demo-project",
                "profile_id": running_stack.info.profile_id,
                "prompt": "Private",
                "count": 1,
            },
        )
        job = wait_final(user, submitted.json()["id"])
    media_id = job["images"][0]["media_id"]
    with running_stack.user(running_stack.info.second_user_token) as other:
        assert other.get(f"/v1/generations/{job['id']}").status_code == 404
        assert other.get(f"/v1/media/{media_id}/content").status_code == 404
        assert other.get("/v1/projects/demo-project/media").status_code in (403, 404)
        refused = other.post(
            "/v1/generations",
            json={
                "project": "demo-project",
                "profile_id": running_stack.info.profile_id,
                "prompt": "Sneaky",
                "count": 1,
            },
        )
        assert refused.status_code == 403
        assert refused.json()["error"]["code"]


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"size": "999x999"}, 422, "size_not_allowed"),
        ({"count": 3}, 422, "count_not_allowed"),
        ({"prompt": "   "}, 422, "empty_prompt"),
        ({"prompt": "x" * 5000}, 422, "prompt_too_long"),
        ({"options": {"sharpness": 3}}, 422, "unknown_option"),
        ({"profile_id": "no-such-profile"}, 422, "unknown_profile"),
    ],
)
def test_bad_requests_are_refused_and_enqueue_nothing(
    running_stack: RunningStack, change: dict[str, Any], status: int, code: str
) -> None:
    body = {
        "project": "demo-project",
        "profile_id": running_stack.info.profile_id,
        "prompt": "fine",
        "count": 1,
        **change,
    }
    with running_stack.user() as user:
        before = len(
            user.get("/v1/projects/demo-project/generations", params={"active": "false"}).json()[
                "jobs"
            ]
        )
        response = user.post("/v1/generations", json=body)
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["message"]
        after = len(
            user.get("/v1/projects/demo-project/generations", params={"active": "false"}).json()[
                "jobs"
            ]
        )
    assert after == before


def test_missing_token_and_malformed_json(running_stack: RunningStack) -> None:
    anonymous = httpx.post(f"{running_stack.info.gateway_url}/v1/generations", json={})
    assert anonymous.status_code == 401
    with running_stack.user() as user:
        broken = user.post(
            "/v1/generations", content=b"{not json", headers={"Content-Type": "application/json"}
        )
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == "malformed_json"
