"""The Inkweld-compatible API through every real process: each image-generation operation of
the app's document, driven against the running gateway, every answer validated against the
document's schemas; and the synchronous generate's behaviour when it stops waiting.

Generation runs on the `openai` worker against the fake OpenAI server (the app has no name for
Atelier's offline provider, so profiles of it are not shown to the app).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jsonschema
import jwt
import pytest

if TYPE_CHECKING:
    from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e

DOCUMENT = json.loads(
    (
        Path(__file__).parents[2] / "services/gateway/src/atelier_gateway/inkweld/openapi.json"
    ).read_text()
)
API = "/api/v1"
FINAL = {"completed", "partial", "failed", "cancelled"}
PNG = b"\x89PNG\r\n\x1a\n"
WRITER = "inkweld-writer"
PROJECT_KEY = f"{WRITER}/salt-road"  # Atelier project `inkweld-writer__salt-road`


# --- the document's schemas -------------------------------------------------------------------


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0 → JSON Schema: `nullable: true` becomes a `null` alternative."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _json_schema(v) for k, v in node.items() if k not in ("nullable", "example")}
    return {"anyOf": [converted, {"type": "null"}]} if node.get("nullable") is True else converted


def conforms(operation_id: str, response: httpx.Response) -> Any:
    """The status is one the operation lists and a JSON body fits its schema."""
    for item in DOCUMENT["paths"].values():
        for operation in item.values():
            if operation.get("operationId") != operation_id:
                continue
            responses = operation["responses"]
            status = str(response.status_code)
            assert status in responses, f"{operation_id}: {status} {response.text[:300]}"
            content = responses[status].get("content", {})
            if "application/json" not in content:
                assert response.content
                return response.content
            schema = {
                **_json_schema(content["application/json"]["schema"]),
                "components": _json_schema(DOCUMENT["components"]),
            }
            body = response.json()
            jsonschema.validate(body, schema, cls=jsonschema.Draft7Validator)
            return body
    raise AssertionError(f"no operation {operation_id} in the document")


# --- callers ----------------------------------------------------------------------------------


@dataclass
class Inkweld:
    stack: RunningStack
    writer: httpx.Client
    admin: httpx.Client
    anonymous: httpx.Client

    def native(self) -> httpx.Client:
        return self.stack.user(self.writer.headers["Authorization"].removeprefix("Bearer "))


def _admin_token(stack: RunningStack) -> str:
    secret = stack.stack.secrets["jwt_secret"]
    now = int(time.time())
    claims = {"sub": "inkweld-admin", "roles": ["admin"], "iss": "atelier", "exp": now + 3600}
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.fixture(scope="module")
def ink(running_stack: RunningStack) -> Iterator[Inkweld]:
    url = running_stack.info.gateway_url
    writer_token = running_stack.stack.mint_token(WRITER, [f"{WRITER}__salt-road"])
    with (
        httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {writer_token}"}, timeout=60
        ) as writer,
        httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {_admin_token(running_stack)}"},
            timeout=60,
        ) as admin,
        httpx.Client(base_url=url, timeout=60) as anonymous,
    ):
        yield Inkweld(running_stack, writer, admin, anonymous)


def create_profile(ink: Inkweld, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": f"Inkweld E2E {uuid.uuid4().hex[:8]}",
        "description": "GPT image through the fake OpenAI server",
        "provider": "openai",
        "modelId": "gpt-image-1",
        "supportedSizes": ["1024x1024", "1536x1024"],
        "defaultSize": "1024x1024",
        "modelConfig": {"baseUrl": f"{ink.stack.openai_url}/v1"},
        "creditCost": 1,
        **overrides,
    }
    created = ink.admin.post(f"{API}/admin/image-profiles", json=body)
    assert created.status_code == 201, created.text
    profile: dict[str, Any] = conforms("adminCreateImageProfile", created)
    return profile


def eventually(check: Any, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s")
        time.sleep(0.2)


def wait_final(client: httpx.Client, job_id: str, timeout_s: float = 90) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/v1/generations/{job_id}").json()
        return job if job["status"] in FINAL else None

    result: dict[str, Any] = eventually(final, timeout_s)
    return result


# --- every operation --------------------------------------------------------------------------


def test_every_operation_answers_as_the_document_says(ink: Inkweld) -> None:
    writer, admin, anonymous = ink.writer, ink.admin, ink.anonymous

    # Configuration: public.
    conforms("getSystemFeatures", anonymous.get(f"{API}/config/features"))

    # Admin: providers, create (and its refusals), read, change.
    providers = conforms(
        "adminListImageProviders", admin.get(f"{API}/admin/image-profiles/providers")
    )
    assert {p["id"] for p in providers} >= {"openai", "stable-diffusion"}
    profile = create_profile(ink)
    profile_id = profile["id"]
    assert profile["modelConfig"] == {"baseUrl": f"{ink.stack.openai_url}/v1"}
    duplicate = admin.post(
        f"{API}/admin/image-profiles",
        json={"name": profile["name"], "provider": "openai", "modelId": "gpt-image-1"},
    )
    assert duplicate.status_code == 409
    # With a profile the app can show, generation is available to it.
    features = conforms("getSystemFeatures", anonymous.get(f"{API}/config/features"))
    assert features["aiImageGeneration"] is True and features["aiKillSwitch"] is False
    conforms("adminCreateImageProfile", duplicate)
    assert writer.post(f"{API}/admin/image-profiles", json={}).status_code == 403
    assert anonymous.get(f"{API}/admin/image-profiles").status_code == 401

    listed = conforms("adminListImageProfiles", admin.get(f"{API}/admin/image-profiles"))
    assert profile_id in {p["id"] for p in listed}
    got = conforms("adminGetImageProfile", admin.get(f"{API}/admin/image-profiles/{profile_id}"))
    assert got["supportedSizes"] == ["1024x1024", "1536x1024"]
    patched = conforms(
        "adminUpdateImageProfile",
        admin.patch(
            f"{API}/admin/image-profiles/{profile_id}", json={"description": "Landscape too"}
        ),
    )
    assert patched["description"] == "Landscape too"
    assert patched["supportedSizes"] == got["supportedSizes"]
    missing = admin.get(f"{API}/admin/image-profiles/{uuid.uuid4()}")
    assert missing.status_code == 404
    conforms("adminGetImageProfile", missing)

    # What a writer sees: the profile, the providers' status, no custom sizes.
    public = conforms("listImageProfiles", writer.get(f"{API}/ai/image-profiles"))
    assert profile_id in {p["id"] for p in public}
    status = conforms("getImageGenerationStatus", writer.get(f"{API}/ai/image/status"))
    assert status["available"] is True
    assert "openai" in {p["type"] for p in status["providers"]}
    conforms("getCustomImageSizes", writer.get(f"{API}/ai/image/custom-sizes"))
    sizes = {"sizes": [{"id": "w", "name": "Wide", "width": 1536, "height": 1024}]}
    conforms("updateCustomImageSizes", admin.put(f"{API}/ai/image/custom-sizes", json=sizes))
    forbidden = writer.put(f"{API}/ai/image/custom-sizes", json=sizes)
    assert forbidden.status_code == 403
    conforms("updateCustomImageSizes", forbidden)

    # Generate: two images, at the profile's size nearest 3:2, answered when they landed.
    generated = writer.post(
        f"{API}/ai/image/generate",
        json={
            "prompt": "A salt road across the marsh at dawn",
            "profileId": profile_id,
            "projectKey": PROJECT_KEY,
            "n": 2,
            "size": "3:2",
            "worldbuildingContext": [
                {
                    "elementId": "marsh",
                    "name": "The Grey Marsh",
                    "type": "location",
                    "role": "setting",
                    "data": {"description": "Flat, silver, endless"},
                }
            ],
        },
    )
    body = conforms("generateImage", generated)
    assert generated.status_code == 200, generated.text
    assert body["provider"] == "openai" and body["model"] == "gpt-image-1"
    images = [base64.b64decode(image["b64Json"]) for image in body["data"]]
    assert len(images) == 2 and all(data.startswith(PNG) for data in images)
    sent = ink.stack.openai.bodies[-1]
    assert sent["size"] == "1536x1024" and sent["n"] == 2
    assert "The Grey Marsh" in sent["prompt"] and "Flat, silver, endless" in sent["prompt"]
    job_id = generated.headers["location"].rsplit("/", 1)[-1]

    blocked = writer.post(
        f"{API}/ai/image/generate",
        json={
            "prompt": "[openai:moderation-input] something",
            "profileId": profile_id,
            "projectKey": PROJECT_KEY,
        },
    )
    assert blocked.status_code == 400
    assert "refused" in conforms("generateImage", blocked)["error"]
    unknown = writer.post(
        f"{API}/ai/image/generate",
        json={"prompt": "x", "profileId": str(uuid.uuid4()), "projectKey": PROJECT_KEY},
    )
    assert unknown.status_code == 400
    conforms("generateImage", unknown)

    # The images are in the project's media library. The app holds them already (it got their
    # bytes), so the sync listing waits for its own copies instead of offering them again.
    media = f"{API}/media/{PROJECT_KEY}"
    library = conforms("listProjectMedia", writer.get(media))
    names = {item["filename"] for item in library["items"]}
    # No `url` in the answer (an <img> could not send the token): the job names its media.
    job = writer.get(f"/v1/generations/{job_id}").json()
    mine = [f"{image['media_id']}.png" for image in sorted(job["images"], key=lambda i: i["index"])]
    assert not set(mine) & names
    file = writer.get(f"{media}/{mine[0]}")
    assert conforms("getProjectMediaFile", file) == images[0]
    uploaded = writer.post(media, files={"file": ("local.png", images[1], "image/png")})
    assert conforms("uploadProjectMedia", uploaded)["filename"] == "local.png"
    stranger = writer.post(media, files={"file": ("x.png", PNG + b"not ours", "image/png")})
    assert conforms("uploadProjectMedia", stranger)["filename"] == "x.png"
    listed = conforms("listProjectMedia", writer.get(media))
    sizes = {item["filename"]: item["size"] for item in listed["items"]}
    assert sizes["local.png"] == len(images[1]) and sizes["x.png"] == len(PNG) + 8
    assert writer.get(f"{media}/x.png").content == PNG + b"not ours"
    elsewhere = writer.get(f"{API}/media/someone/else")
    assert elsewhere.status_code == 404
    conforms("listProjectMedia", elsewhere)

    # The cover: any image (the app crops first), re-encoded as JPEG and chosen as the cover.
    cover = f"{API}/projects/{PROJECT_KEY}/cover"
    set_cover = conforms(
        "uploadProjectCover", writer.post(cover, files={"cover": ("blob", images[0])})
    )
    stored = writer.get(f"{media}/{set_cover['coverImage']}")
    assert stored.content.startswith(b"\xff\xd8")  # JPEG
    shown = eventually(lambda: (r := writer.get(cover)).status_code == 200 and r)
    assert conforms("getProjectCover", shown) == stored.content
    kept = writer.delete(cover)
    assert kept.status_code == 403
    conforms("deleteProjectCover", kept)
    assert anonymous.get(cover).status_code == 404

    # The audit: the job, once profiles recorded its outcome.
    def audited() -> dict[str, Any] | None:
        page = conforms(
            "adminListImageAudits", admin.get(f"{API}/admin/image-audits", params={"limit": 100})
        )
        return next((a for a in page["audits"] if a["id"] == job_id), None)

    entry = eventually(audited)
    assert entry["status"] == "success" and entry["userId"] == WRITER
    assert entry["creditCost"] == 2  # two images at one credit
    # Atelier's addition (ADR 0024): the job's receipt, in the app's casing.
    assert entry["receipt"]["chargedImages"] == 2
    assert entry["receipt"]["creditsCharged"] == entry["creditCost"]
    assert [line["charged"] for line in entry["receipt"]["images"]] == [True, True]
    one = conforms("adminGetImageAudit", admin.get(f"{API}/admin/image-audits/{job_id}"))
    assert one == entry
    moderated = conforms(
        "adminListImageAudits",
        admin.get(f"{API}/admin/image-audits", params={"status": "moderated", "limit": 100}),
    )
    assert all(a["status"] == "moderated" for a in moderated["audits"])
    stats = conforms(
        "adminGetImageAuditStats", admin.get(f"{API}/admin/image-audits/stats/summary")
    )
    assert stats["totalRequests"] >= 1 and stats["successCount"] >= 1
    nothing = admin.get(f"{API}/admin/image-audits/{uuid.uuid4()}")
    assert nothing.status_code == 404
    conforms("adminGetImageAudit", nothing)

    # Delete the profile: gone for the app and for Atelier.
    deleted = admin.delete(f"{API}/admin/image-profiles/{profile_id}")
    conforms("adminDeleteImageProfile", deleted)
    assert admin.get(f"{API}/admin/image-profiles/{profile_id}").status_code == 404
    with ink.stack.admin() as native_admin:
        assert native_admin.get(f"/admin/v1/profiles/{profile_id}").status_code == 404


# --- the synchronous generate when it stops waiting -------------------------------------------


@pytest.fixture
def slow_profile(ink: Inkweld) -> Iterator[dict[str, Any]]:
    """A profile whose `[openai:hang]` prompts take 4 s at the fake provider, then succeed."""
    state = ink.stack.openai
    before = state.hang_s
    state.hang_s = 4.0
    profile = create_profile(ink)
    try:
        yield profile
    finally:
        state.hang_s = before
        ink.admin.delete(f"{API}/admin/image-profiles/{profile['id']}")


def test_a_timed_out_generate_leaves_the_job_running(
    ink: Inkweld, slow_profile: dict[str, Any]
) -> None:
    response = ink.writer.post(
        f"{API}/ai/image/generate",
        json={
            "prompt": "[openai:hang] A slow lighthouse",
            "profileId": slow_profile["id"],
            "projectKey": PROJECT_KEY,
        },
        headers={"Prefer": "wait=1"},
    )
    assert response.status_code == 503
    assert "media library" in conforms("generateImage", response)["error"]
    location = response.headers["location"]
    with ink.native() as native:
        job = wait_final(native, location.rsplit("/", 1)[-1])
        assert job["status"] == "completed", job
        [image] = job["images"]
        assert native.get(f"/v1/media/{image['media_id']}").status_code == 200


def test_a_caller_that_goes_away_still_gets_its_image_in_the_library(
    ink: Inkweld, slow_profile: dict[str, Any]
) -> None:
    marker = uuid.uuid4().hex
    with pytest.raises(httpx.ReadTimeout):
        ink.writer.post(
            f"{API}/ai/image/generate",
            json={
                "prompt": f"[openai:hang] A lighthouse {marker}",
                "profileId": slow_profile["id"],
                "projectKey": PROJECT_KEY,
            },
            timeout=1.0,
        )
    with ink.native() as native:

        def submitted() -> dict[str, Any] | None:
            listed = native.get(
                f"/v1/projects/{WRITER}__salt-road/generations", params={"active": "false"}
            ).json()
            return next((j for j in listed["jobs"] if marker in j["prompt"]), None)

        job = wait_final(native, eventually(submitted)["id"])
        assert job["status"] == "completed", job
    library = conforms("listProjectMedia", ink.writer.get(f"{API}/media/{PROJECT_KEY}"))
    assert f"{job['images'][0]['media_id']}.png" in {i["filename"] for i in library["items"]}


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:{port}/v1", "http://169.254.169.254/", "https://collector.example/v1"],
)
def test_the_apps_admin_cannot_send_the_key_elsewhere(ink: Inkweld, base_url: str) -> None:
    """Issue 15, item 1: the app's admin role sets `modelConfig.baseUrl`; an origin no operator
    allowed for the OpenAI key (here: not the fake OpenAI's) is refused with the reason, and no
    profile exists to send the key with."""
    port = int(ink.stack.openai_url.rsplit(":", 1)[1]) + 1  # beside the allowed fake
    name = f"Exfiltration {uuid.uuid4().hex[:8]}"
    answer = ink.admin.post(
        f"{API}/admin/image-profiles",
        json={
            "name": name,
            "provider": "openai",
            "modelId": "gpt-image-1",
            "supportedSizes": ["1024x1024"],
            "modelConfig": {"baseUrl": base_url.format(port=port)},
        },
    )
    # Profiles' 422, answered in the app's shape (its API says 400 for a refused input).
    assert answer.status_code == 400, answer.text
    assert "no operator allowed that origin for openai's key" in answer.text
    listed = ink.admin.get(f"{API}/admin/image-profiles").json()
    assert name not in {profile["name"] for profile in listed}
