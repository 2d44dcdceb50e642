"""The Inkweld-compatible routes over fake profiles, dispatch and media on the in-memory broker.

Every answer is checked against the app's document (`assert_conforms`): status listed for the
operation, body fitting its schema.
"""

import base64
import hashlib
import json
from types import SimpleNamespace
from typing import Any

import pytest
from faststream.nats import NatsBroker, TestNatsBroker
from gateway_testkit import make_job, make_media, make_token
from inkweld_testkit import (
    ADMIN_TOKEN,
    USER_TOKEN,
    InkweldHarness,
    InkweldWorld,
    assert_conforms,
    audit_record,
    bearer,
    inkweld_gateway,
    openai_profile,
    spec,
)

from atelier_contracts.errors import BlockedInput, ErrorClass, ErrorInfo, NotFound, Unavailable
from atelier_contracts.jobs import JobStatus
from atelier_contracts.profiles import (
    AuditListQuery,
    GenerationSettings,
    ProfileCreateCommand,
    ProfileReplaceCommand,
    QuotaReserveReply,
)
from atelier_gateway.auth import User
from atelier_gateway.inkweld.backends import ProfilesAdmin
from atelier_gateway.streams import StatusUpdate
from atelier_gateway.waiting import wait_for_final

API = "/api/v1"
DALLE = openai_profile().id
STORED_BYTES = b"\x89PNGdata"  # what gateway_testkit's fake storage serves for originals


@pytest.fixture
async def ink() -> Any:
    async with inkweld_gateway() as harness:
        yield harness


def generate_body(**overrides: Any) -> dict[str, Any]:
    return {"prompt": "A lighthouse in a storm", "profileId": DALLE, **overrides}


# --- authentication ---------------------------------------------------------------------------

AUTHENTICATED = [
    ("GET", "/ai/image/status", "getImageGenerationStatus"),
    ("POST", "/ai/image/generate", "generateImage"),
    ("GET", "/ai/image/custom-sizes", "getCustomImageSizes"),
    ("PUT", "/ai/image/custom-sizes", "updateCustomImageSizes"),
    ("GET", "/ai/image-profiles", "listImageProfiles"),
    ("GET", "/admin/image-profiles", "adminListImageProfiles"),
    ("POST", "/admin/image-profiles", "adminCreateImageProfile"),
    ("GET", "/admin/image-profiles/providers", "adminListImageProviders"),
    ("GET", f"/admin/image-profiles/{DALLE}", "adminGetImageProfile"),
    ("PATCH", f"/admin/image-profiles/{DALLE}", "adminUpdateImageProfile"),
    ("DELETE", f"/admin/image-profiles/{DALLE}", "adminDeleteImageProfile"),
    ("GET", "/admin/image-audits", "adminListImageAudits"),
    ("GET", "/admin/image-audits/job-1", "adminGetImageAudit"),
    ("GET", "/admin/image-audits/stats/summary", "adminGetImageAuditStats"),
    ("GET", "/media/alice/novel", "listProjectMedia"),
    ("POST", "/media/alice/novel", "uploadProjectMedia"),
    ("GET", "/media/alice/novel/m1.png", "getProjectMediaFile"),
    ("POST", "/projects/alice/novel/cover", "uploadProjectCover"),
    ("DELETE", "/projects/alice/novel/cover", "deleteProjectCover"),
]
ADMIN_ONLY = [entry for entry in AUTHENTICATED if "/admin/" in entry[1] or entry[0] == "PUT"]


@pytest.mark.parametrize(("method", "path", "operation"), AUTHENTICATED)
async def test_every_route_but_features_and_cover_needs_a_token(
    ink: InkweldHarness, method: str, path: str, operation: str
) -> None:
    response = await ink.client.request(method, API + path, json={})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = assert_conforms(operation, response)
    assert "bearer token" in (body.get("error") or body.get("message"))
    assert ink.world.published == []


@pytest.mark.parametrize(("method", "path", "operation"), ADMIN_ONLY)
async def test_admin_routes_refuse_a_user_token(
    ink: InkweldHarness, method: str, path: str, operation: str
) -> None:
    response = await ink.client.request(method, API + path, json={}, headers=bearer(USER_TOKEN))
    assert response.status_code == 403
    assert "admin" in assert_conforms(operation, response)["error"]
    assert ink.world.commands == []


async def test_admin_true_claim_is_an_admin_too(ink: InkweldHarness) -> None:
    token = make_token("root", admin=True)
    response = await ink.client.get(f"{API}/admin/image-profiles", headers=bearer(token))
    assert response.status_code == 200
    for claims in ({"roles": ["editor"]}, {"admin": "yes"}, {"roles": "admin"}):
        response = await ink.client.get(
            f"{API}/admin/image-profiles", headers=bearer(make_token("bob", **claims))
        )
        assert response.status_code == 403, claims


async def test_a_forged_admin_claim_is_refused(ink: InkweldHarness) -> None:
    forged = make_token("root", roles=["admin"], secret="not-the-gateway-secret-0123456789ab")
    response = await ink.client.get(f"{API}/admin/image-profiles", headers=bearer(forged))
    assert response.status_code == 401


# --- features, status, profiles ---------------------------------------------------------------


async def test_features_need_no_token_and_follow_the_switch(ink: InkweldHarness) -> None:
    response = await ink.client.get(f"{API}/config/features")
    body = assert_conforms("getSystemFeatures", response)
    assert body["aiImageGeneration"] is True and body["aiKillSwitch"] is False
    assert body["aiKillSwitchLockedByEnv"] is True

    ink.world.settings = GenerationSettings(enabled=False, reason="Maintenance")
    body = assert_conforms("getSystemFeatures", await ink.client.get(f"{API}/config/features"))
    assert body["aiImageGeneration"] is False and body["aiKillSwitch"] is True


async def test_profiles_of_providers_the_app_cannot_name_are_left_out(ink: InkweldHarness) -> None:
    response = await ink.client.get(f"{API}/ai/image-profiles", headers=bearer(USER_TOKEN))
    body = assert_conforms("listImageProfiles", response)
    # The offline "Sketch" profile has no Inkweld provider name.
    assert [p["name"] for p in body] == ["DALL-E 3"]
    assert body[0] == {
        "id": DALLE,
        "name": "DALL-E 3",
        "description": "Crisp",
        "provider": "openai",
        "modelId": "dall-e-3",
        "enabled": True,
        "supportsImageInput": False,
        "supportsCustomResolutions": False,
        "usesAspectRatioOnly": False,
        "supportedSizes": ["1024x1024", "1792x1024", "1024x1792"],
        "defaultSize": "1024x1024",
        "sortOrder": 1,
        "creditCost": 2.0,
    }


async def test_an_alias_shows_an_atelier_only_provider() -> None:
    env = {"ATELIER_GATEWAY_INKWELD_PROVIDER_ALIASES": json.dumps({"offline": "stable-diffusion"})}
    async with inkweld_gateway(env=env) as ink:
        response = await ink.client.get(f"{API}/ai/image-profiles", headers=bearer(USER_TOKEN))
        body = assert_conforms("listImageProfiles", response)
        assert {p["name"]: p["provider"] for p in body} == {
            "Sketch": "stable-diffusion",
            "DALL-E 3": "openai",
        }


async def test_status_lists_providers_with_their_enabled_profiles(ink: InkweldHarness) -> None:
    ink.world.profiles.append(openai_profile(id="off", name="Old", enabled=False))
    response = await ink.client.get(f"{API}/ai/image/status", headers=bearer(USER_TOKEN))
    body = assert_conforms("getImageGenerationStatus", response)
    assert body["available"] is True and body["defaultProvider"] == "openai"
    [openai] = body["providers"]
    assert openai["type"] == "openai" and openai["available"] and openai["enabled"]
    assert [m["name"] for m in openai["models"]] == ["DALL-E 3"]
    assert openai["models"][0]["supportsQuality"] and openai["models"][0]["maxImages"] == 2

    ink.world.settings = GenerationSettings(enabled=False, reason="Maintenance")
    body = assert_conforms(
        "getImageGenerationStatus",
        await ink.client.get(f"{API}/ai/image/status", headers=bearer(USER_TOKEN)),
    )
    assert body["available"] is False and "Maintenance" in body["providers"][0]["error"]


async def test_custom_sizes_are_none_and_cannot_be_set(ink: InkweldHarness) -> None:
    got = await ink.client.get(f"{API}/ai/image/custom-sizes", headers=bearer(USER_TOKEN))
    assert assert_conforms("getCustomImageSizes", got) == {"sizes": []}
    size = {"id": "wide", "name": "Wide", "width": 1792, "height": 1024}
    put = await ink.client.put(
        f"{API}/ai/image/custom-sizes", json={"sizes": [size]}, headers=bearer(ADMIN_TOKEN)
    )
    assert put.status_code == 400
    assert "supportedSizes" in assert_conforms("updateCustomImageSizes", put)["error"]


# --- generate ---------------------------------------------------------------------------------


async def test_generate_submits_a_job_and_answers_with_its_images(ink: InkweldHarness) -> None:
    response = await ink.client.post(
        f"{API}/ai/image/generate",
        json=generate_body(n=2, size="16:9", quality="hd", style="natural", negativePrompt="fog"),
        headers=bearer(USER_TOKEN),
    )
    body = assert_conforms("generateImage", response)
    [event] = ink.world.published
    # The native request: the only granted project, the profile's size nearest 16:9, the
    # options the profile declares (negative_prompt is not one of DALL-E 3's).
    assert event.project == "alpha" and event.user_id == "alice"
    assert (event.size, event.count) == ("1792x1024", 2)
    assert event.options == {"quality": "hd", "style": "natural"}
    assert response.headers["location"] == f"/v1/generations/{event.job_id}"
    assert body["provider"] == "openai" and body["model"] == "dall-e-3"
    assert body["request"] == {
        "prompt": "A lighthouse in a storm",
        "size": "16:9",
        "quality": "hd",
        "style": "natural",
    }
    assert [image["index"] for image in body["data"]] == [0, 1]
    image = body["data"][0]
    assert base64.b64decode(image["b64Json"]) == STORED_BYTES
    assert image["mimeType"] == "image/png"
    # No `url`: the app prefers it, and an <img> could not load it without the token (issue 22).
    assert "url" not in image


async def test_generate_names_the_project_by_its_key() -> None:
    token = make_token("alice", ["alice__my-novel", "other"])
    async with inkweld_gateway() as ink:
        ok = await ink.client.post(
            f"{API}/ai/image/generate",
            json=generate_body(projectKey="alice/my-novel"),
            headers=bearer(token),
        )
        assert_conforms("generateImage", ok)
        assert ink.world.published[-1].project == "alice__my-novel"

        for key, says in (("bob/their-novel", "no access"), (None, "projectKey")):
            refused = await ink.client.post(
                f"{API}/ai/image/generate",
                json=generate_body(**({"projectKey": key} if key else {})),
                headers=bearer(token),
            )
            assert refused.status_code == 400
            assert says in assert_conforms("generateImage", refused)["error"]
        assert len(ink.world.published) == 1


async def test_reference_elements_send_the_image_chosen_for_them(ink: InkweldHarness) -> None:
    ink.world.element_images = {"mara": make_media("portrait-1")}
    context = [
        {
            "elementId": "mara",
            "name": "Mara Vell",
            "type": "character",
            "role": "reference",
            "data": {"description": "A smuggler", "eyes": "green"},
        },
        {
            "elementId": "port",
            "name": "Port Azure",
            "type": "location",
            "role": "setting",
            "roleDescription": "where it happens",
            "data": {},
        },
    ]
    response = await ink.client.post(
        f"{API}/ai/image/generate",
        json=generate_body(worldbuildingContext=context),
        headers=bearer(USER_TOKEN),
    )
    assert_conforms("generateImage", response)
    mara, port = ink.world.published[0].context.elements
    assert mara.image is not None and mara.image.media_id == "portrait-1" and mara.send.image
    assert mara.description == "A smuggler"
    assert mara.data == {"eyes": "green", "role": "reference"}
    assert port.image is None and not port.send.image
    assert port.data == {"role": "where it happens"}


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"profileId": "nope"}, "no image profile"),
        ({"profileId": "sketch"}, "no image profile"),  # offline: not shown to the app
        ({"size": "512x512"}, "1792x1024"),
        ({"n": 4}, "1 or 2"),
        ({"prompt": ""}, "prompt"),
        ({"size": "huge"}, "size"),
    ],
)
async def test_generate_refusals_are_400_and_queue_nothing(
    ink: InkweldHarness, overrides: dict[str, Any], says: str
) -> None:
    response = await ink.client.post(
        f"{API}/ai/image/generate", json=generate_body(**overrides), headers=bearer(USER_TOKEN)
    )
    assert response.status_code == 400, response.text
    assert says in assert_conforms("generateImage", response)["error"]
    assert ink.world.published == []


async def test_generate_while_generation_is_off_is_503(ink: InkweldHarness) -> None:
    ink.world.settings = GenerationSettings(enabled=False, reason="Maintenance")
    response = await ink.client.post(
        f"{API}/ai/image/generate", json=generate_body(), headers=bearer(USER_TOKEN)
    )
    assert response.status_code == 503
    assert "Maintenance" in assert_conforms("generateImage", response)["error"]


async def test_generate_over_quota_is_400_with_retry_after(ink: InkweldHarness) -> None:
    ink.world.quota_reply = QuotaReserveReply(
        outcome="rate_limited", message="Too quick; try again in 3 seconds.", retry_after_s=2.5
    )
    response = await ink.client.post(
        f"{API}/ai/image/generate", json=generate_body(), headers=bearer(USER_TOKEN)
    )
    assert response.status_code == 400
    assert response.headers["retry-after"] == "3"
    assert "Too quick" in assert_conforms("generateImage", response)["error"]


async def test_a_failed_job_answers_its_reason(ink: InkweldHarness) -> None:
    ink.world.outcome = "fail"
    response = await ink.client.post(
        f"{API}/ai/image/generate", json=generate_body(), headers=bearer(USER_TOKEN)
    )
    assert response.status_code == 400
    assert "refused" in assert_conforms("generateImage", response)["error"]
    assert response.headers["x-atelier-error-code"] == "content_blocked"


async def test_a_blocked_job_says_where_in_the_text_and_beside_it(ink: InkweldHarness) -> None:
    """Issue 21, item 5: the stage, category and input of a block, in the app's error text (which
    it shows as "Content blocked") and machine-readable beside it."""
    ink.world.outcome = "fail"
    ink.world.failure = ErrorInfo.of(ErrorClass.CONTENT_BLOCKED).model_copy(
        update={"stage": "input", "category": "violence", "input": BlockedInput(kind="prompt")}
    )
    response = await ink.client.post(
        f"{API}/ai/image/generate", json=generate_body(), headers=bearer(USER_TOKEN)
    )
    assert response.status_code == 400
    body = assert_conforms("generateImage", response)
    assert body["error"].startswith("MODERATION_BLOCKED: ")
    assert "(stage: input; category: violence; input: prompt)" in body["error"]
    assert body["moderation"] == {
        "stage": "input",
        "category": "violence",
        "input": {"kind": "prompt", "element_id": None},
    }


async def test_a_slow_job_runs_on_after_the_wait(ink: InkweldHarness) -> None:
    ink.world.outcome = "pending"
    response = await ink.client.post(
        f"{API}/ai/image/generate",
        json=generate_body(),
        headers={**bearer(USER_TOKEN), "Prefer": "wait=0.3"},
    )
    assert response.status_code == 503
    body = assert_conforms("generateImage", response)
    [event] = ink.world.published
    assert event.job_id in body["error"] and "media library" in body["error"]
    assert response.headers["location"] == f"/v1/generations/{event.job_id}"
    assert response.headers["preference-applied"] == "wait=0.3"
    # The job was queued durably and nothing cancelled it; every subscription was closed.
    assert ink.world.jobs[event.job_id].status == JobStatus.QUEUED
    assert ink.subscriptions and all(s.closed for s in ink.subscriptions)


async def test_the_wait_is_configurable() -> None:
    world = InkweldWorld(profiles=[openai_profile()], outcome="pending")
    env = {"ATELIER_GATEWAY_INKWELD_GENERATE_TIMEOUT_S": "0.2"}
    async with inkweld_gateway(world, env=env) as ink:
        response = await ink.client.post(
            f"{API}/ai/image/generate",
            json=generate_body(),
            # A caller may shorten the wait, never lengthen it.
            headers={**bearer(USER_TOKEN), "Prefer": "wait=60"},
        )
        assert response.status_code == 503
        assert "0.2 seconds" in response.json()["error"]
        assert "preference-applied" not in response.headers


async def test_an_idempotency_key_makes_one_job(ink: InkweldHarness) -> None:
    headers = {**bearer(USER_TOKEN), "Idempotency-Key": "dialog-42"}
    first = await ink.client.post(f"{API}/ai/image/generate", json=generate_body(), headers=headers)
    again = await ink.client.post(f"{API}/ai/image/generate", json=generate_body(), headers=headers)
    assert first.status_code == again.status_code == 200
    assert len(ink.world.published) == 1
    assert first.json()["data"] == again.json()["data"]


# --- admin: profiles --------------------------------------------------------------------------


async def test_create_translates_the_form_into_a_profile(ink: InkweldHarness) -> None:
    response = await ink.client.post(
        f"{API}/admin/image-profiles",
        json={
            "name": "Wide DALL-E",
            "description": "For landscapes",
            "provider": "openai",
            "modelId": "dall-e-3",
            "supportedSizes": ["1792x1024", "1024x1024", "auto"],
            "defaultSize": "1792x1024",
            "modelConfig": {"baseUrl": "https://proxy.example/v1", "organization": "acme"},
            "creditCost": 3,
            "sortOrder": 5,
        },
        headers=bearer(ADMIN_TOKEN),
    )
    assert response.status_code == 201, response.text
    body = assert_conforms("adminCreateImageProfile", response)
    [command] = ink.world.commands
    assert isinstance(command, ProfileCreateCommand) and command.requested_by == "root"
    fields = command.fields
    assert (fields.provider, fields.model) == ("openai", "dall-e-3")
    assert fields.sizes == ["1792x1024", "1024x1024"] and fields.default_size == "1792x1024"
    assert fields.base_url == "https://proxy.example/v1"
    assert fields.provider_config == {
        "organization": "acme",
        "inkweld": {"description": "For landscapes", "usesAspectRatioOnly": False},
    }
    assert [o.name for o in fields.options] == ["quality", "style"]  # what dall-e-3 takes
    assert (fields.credit_cost, fields.sort_order, fields.max_reference_images) == (3.0, 5, 0)
    assert fields.prompt_max_length == 4000  # dall-e-3's limit, below the app's 16000
    assert body["modelConfig"] == {"organization": "acme", "baseUrl": "https://proxy.example/v1"}
    assert body["description"] == "For landscapes" and body["creditCost"] == 3.0


async def test_create_refusals(ink: InkweldHarness) -> None:
    base = {"provider": "openai", "modelId": "dall-e-3"}
    for body, status, says in (
        ({**base, "name": "dall-e 3"}, 409, "taken"),
        ({**base, "name": "X", "supportsCustomResolutions": True}, 400, "supportedSizes"),
        ({**base, "name": "X", "supportedSizes": ["big"]}, 400, "not a size"),
        ({**base, "name": ""}, 400, "name"),
        ({"name": "X", "provider": "gemini", "modelId": "m"}, 400, "provider"),
    ):
        response = await ink.client.post(
            f"{API}/admin/image-profiles", json=body, headers=bearer(ADMIN_TOKEN)
        )
        assert response.status_code == status, (body, response.text)
        assert says in assert_conforms("adminCreateImageProfile", response)["error"]
    # Python's JSON parser takes Infinity and NaN; rounding them was a 500.
    for literal in ("Infinity", "NaN", "-Infinity"):
        response = await ink.client.post(
            f"{API}/admin/image-profiles",
            content=f'{{"name": "X", "provider": "openai", "modelId": "dall-e-3", '
            f'"sortOrder": {literal}}}',
            headers={**bearer(ADMIN_TOKEN), "Content-Type": "application/json"},
        )
        assert response.status_code == 400, (literal, response.text)
        assert "sortOrder" in assert_conforms("adminCreateImageProfile", response)["error"]


async def test_aspect_ratio_profiles_round_trip_as_ratios(ink: InkweldHarness) -> None:
    response = await ink.client.post(
        f"{API}/admin/image-profiles",
        json={
            "name": "Nano Banana",
            "provider": "openrouter",
            "modelId": "google/gemini-2.5-flash-image",
            "usesAspectRatioOnly": True,
            "supportedSizes": ["1:1", "16:9", "9:16"],
            "defaultSize": "16:9",
            "supportsImageInput": True,
        },
        headers=bearer(ADMIN_TOKEN),
    )
    body = assert_conforms("adminCreateImageProfile", response)
    fields = ink.world.commands[0].fields
    assert fields.sizes == ["1024x1024", "1344x768", "768x1344"]
    assert fields.default_size == "1344x768" and fields.max_reference_images == 4
    assert body["supportedSizes"] == ["1:1", "16:9", "9:16"] and body["defaultSize"] == "16:9"
    assert body["supportsImageInput"] is True


async def test_admin_reads_list_get_and_providers(ink: InkweldHarness) -> None:
    admin = bearer(ADMIN_TOKEN)
    ink.world.profiles.append(openai_profile(id="off", name="Old", enabled=False))
    listed = assert_conforms(
        "adminListImageProfiles", await ink.client.get(f"{API}/admin/image-profiles", headers=admin)
    )
    assert [p["name"] for p in listed] == ["DALL-E 3", "Old"]  # disabled ones too; no Sketch
    got = await ink.client.get(f"{API}/admin/image-profiles/{DALLE}", headers=admin)
    assert assert_conforms("adminGetImageProfile", got)["modelConfig"] == {}
    for missing in ("nope", "sketch"):
        response = await ink.client.get(f"{API}/admin/image-profiles/{missing}", headers=admin)
        assert response.status_code == 404
        assert_conforms("adminGetImageProfile", response)
    providers = await ink.client.get(f"{API}/admin/image-profiles/providers", headers=admin)
    assert [p["id"] for p in assert_conforms("adminListImageProviders", providers)] == [
        "openai",
        "openrouter",
        "stable-diffusion",
        "falai",
        "workersai",
    ]


async def test_patch_changes_only_what_it_names(ink: InkweldHarness) -> None:
    response = await ink.client.patch(
        f"{API}/admin/image-profiles/{DALLE}",
        json={"description": None, "supportedSizes": ["1792x1024"], "enabled": False},
        headers=bearer(ADMIN_TOKEN),
    )
    body = assert_conforms("adminUpdateImageProfile", response)
    [command] = ink.world.commands
    assert isinstance(command, ProfileReplaceCommand)
    fields = command.fields
    # The default fell off the list, so the first listed size is the default now.
    assert fields.sizes == ["1792x1024"] and fields.default_size == "1792x1024"
    assert not fields.enabled and fields.counts == [1, 2] and fields.credit_cost == 2
    assert body["description"] is None and body["enabled"] is False

    refused = await ink.client.patch(
        f"{API}/admin/image-profiles/{DALLE}", json={"name": None}, headers=bearer(ADMIN_TOKEN)
    )
    assert refused.status_code == 400
    assert "name" in assert_conforms("adminUpdateImageProfile", refused)["error"]


async def test_patch_keeps_an_aliased_provider() -> None:
    env = {"ATELIER_GATEWAY_INKWELD_PROVIDER_ALIASES": json.dumps({"offline": "stable-diffusion"})}
    async with inkweld_gateway(env=env) as ink:
        response = await ink.client.patch(
            f"{API}/admin/image-profiles/sketch",
            json={"provider": "stable-diffusion", "name": "Sketchy"},
            headers=bearer(ADMIN_TOKEN),
        )
        body = assert_conforms("adminUpdateImageProfile", response)
        assert ink.world.commands[0].fields.provider == "offline"
        assert body["provider"] == "stable-diffusion" and body["name"] == "Sketchy"


async def test_delete(ink: InkweldHarness) -> None:
    response = await ink.client.delete(
        f"{API}/admin/image-profiles/{DALLE}", headers=bearer(ADMIN_TOKEN)
    )
    assert "deleted" in assert_conforms("adminDeleteImageProfile", response)["message"]
    assert [p.id for p in ink.world.profiles] == ["sketch"]
    again = await ink.client.delete(
        f"{API}/admin/image-profiles/{DALLE}", headers=bearer(ADMIN_TOKEN)
    )
    assert again.status_code == 404


async def test_profiles_not_answering_is_503() -> None:
    broker = NatsBroker()  # nobody answers on it
    async with TestNatsBroker(broker):
        admin = ProfilesAdmin(broker, query_timeout_s=0.2)
        with pytest.raises(Unavailable, match="profiles service"):
            await admin.audits(AuditListQuery())


# --- admin: audits ----------------------------------------------------------------------------


async def test_audit_list_translates_filters_and_pages(ink: InkweldHarness) -> None:
    ink.world.audits = [
        audit_record("j1"),
        audit_record(
            "j2",
            status="failed",
            moderated=True,
            landed=0,
            failed=1,
            cost=0,
            error={"error_class": "content_blocked", "message": "Refused."},
        ),
        audit_record("j3", status="partial", requested=2, landed=1, failed=1),
    ]
    admin = bearer(ADMIN_TOKEN)
    response = await ink.client.get(f"{API}/admin/image-audits?limit=2&page=1", headers=admin)
    body = assert_conforms("adminListImageAudits", response)
    assert (body["total"], body["page"], body["limit"], body["totalPages"]) == (3, 1, 2, 2)
    assert [(a["id"], a["status"]) for a in body["audits"]] == [
        ("j1", "success"),
        ("j2", "moderated"),
    ]
    assert body["audits"][1]["message"] == "Refused."
    page2 = assert_conforms(
        "adminListImageAudits",
        await ink.client.get(f"{API}/admin/image-audits?limit=2&page=2", headers=admin),
    )
    assert page2["audits"][0]["message"] == "partial: 1 of 2 images landed"

    await ink.client.get(
        f"{API}/admin/image-audits?status=moderated&search=light&userId=alice"
        "&startDate=2025-01-01T00:00:00Z&endDate=2025-01-31",
        headers=admin,
    )
    query = ink.world.audit_queries[-1]
    assert query.error_class == "content_blocked" and query.status is None
    assert query.text == "light" and query.user_id == "alice"
    assert query.since is not None and query.since.isoformat() == "2025-01-01T00:00:00+00:00"
    assert query.until is not None and query.until.isoformat() == "2025-01-31T00:00:01+00:00"
    await ink.client.get(f"{API}/admin/image-audits?status=success", headers=admin)
    assert ink.world.audit_queries[-1].status == "completed"


async def test_an_audit_shows_the_jobs_receipt(ink: InkweldHarness) -> None:
    receipt = {
        "images": [
            {
                "index": 0,
                "charged": True,
                "credits": 2.0,
                "outcome": "landed",
                "reason": "Charged: the image landed (DALL-E 3).",
                "media_id": "m1",
            },
            {
                "index": 1,
                "charged": False,
                "credits": 0.0,
                "outcome": "blocked",
                "reason": "Not charged: the provider refused it at the output stage.",
                "error_class": "content_blocked",
            },
        ],
        "charged_images": 1,
        "not_charged_images": 1,
        "credits_reserved": 4.0,
        "credits_charged": 2.0,
        "credits_refunded": 2.0,
    }
    ink.world.audits = [
        audit_record("j1", status="partial", requested=2, landed=1, failed=1, receipt=receipt),
        audit_record("j0"),
    ]
    response = await ink.client.get(f"{API}/admin/image-audits", headers=bearer(ADMIN_TOKEN))
    shown, older = assert_conforms("adminListImageAudits", response)["audits"]
    assert shown["message"] == (
        "partial: 1 of 2 images landed; "
        "image 2 not charged: the provider refused it at the output stage"
    )
    assert shown["receipt"] == {
        "images": [
            {
                "index": 0,
                "charged": True,
                "credits": 2.0,
                "outcome": "landed",
                "reason": "Charged: the image landed (DALL-E 3).",
                "mediaId": "m1",
            },
            {
                "index": 1,
                "charged": False,
                "credits": 0.0,
                "outcome": "blocked",
                "reason": "Not charged: the provider refused it at the output stage.",
                "errorClass": "content_blocked",
            },
        ],
        "chargedImages": 1,
        "notChargedImages": 1,
        "creditsReserved": 4.0,
        "creditsCharged": 2.0,
        "creditsRefunded": 2.0,
    }
    assert "receipt" not in older  # a job recorded before receipts: the app's shape, unchanged


async def test_audit_filter_mistakes_are_documented_errors(ink: InkweldHarness) -> None:
    admin = bearer(ADMIN_TOKEN)
    for query in ("startDate=yesterday", "startDate=2025-02-01&endDate=2025-01-01", "limit=0"):
        response = await ink.client.get(f"{API}/admin/image-audits?{query}", headers=admin)
        # The operation lists no 400: the nearest status it lists.
        assert response.status_code == 403, query
        assert assert_conforms("adminListImageAudits", response)["error"]


async def test_one_audit_is_found_through_its_job(ink: InkweldHarness) -> None:
    ink.world.audits = [audit_record(f"other-{i}") for i in range(3)] + [audit_record("job-9")]
    ink.world.jobs["job-9"] = make_job(
        "job-9", profile_id=DALLE, status=JobStatus.COMPLETED, user_id="alice"
    )
    ink.world.jobs["running"] = make_job("running", status=JobStatus.GENERATING)
    admin = bearer(ADMIN_TOKEN)
    found = await ink.client.get(f"{API}/admin/image-audits/job-9", headers=admin)
    assert assert_conforms("adminGetImageAudit", found)["id"] == "job-9"
    query = ink.world.audit_queries[-1]
    assert (query.user_id, query.profile_id) == ("alice", DALLE)
    for missing in ("running", "nothing", "bad id"):
        response = await ink.client.get(f"{API}/admin/image-audits/{missing}", headers=admin)
        assert response.status_code == 404
        assert_conforms("adminGetImageAudit", response)


async def test_audit_stats(ink: InkweldHarness) -> None:
    ink.world.audits = [audit_record("j1"), audit_record("j2", moderated=True, status="failed")]
    response = await ink.client.get(
        f"{API}/admin/image-audits/stats/summary?startDate=2025-01-01", headers=bearer(ADMIN_TOKEN)
    )
    body = assert_conforms("adminGetImageAuditStats", response)
    assert (body["totalRequests"], body["successCount"], body["moderatedCount"]) == (2, 1, 1)
    assert body["byUser"][0] == {"userId": "alice", "username": None, "count": 2, "credits": 0}


# --- media and covers -------------------------------------------------------------------------

NOVEL_TOKEN = make_token("alice", ["alice__novel"])
STORED_SHA = hashlib.sha256(STORED_BYTES).hexdigest()


def novel_world() -> InkweldWorld:
    world = InkweldWorld(profiles=[openai_profile()])
    world.media["m1"] = make_media("m1", "alice__novel", sha256=STORED_SHA)
    world.media["m2"] = make_media("m2", "alice__novel", content_type="image/webp")
    world.media["theirs"] = make_media("theirs", "bob__novel")
    return world


async def test_media_list_and_download() -> None:
    async with inkweld_gateway(novel_world()) as ink:
        listed = await ink.client.get(f"{API}/media/alice/novel", headers=bearer(NOVEL_TOKEN))
        body = assert_conforms("listProjectMedia", listed)
        assert body["total"] == 2
        assert body["items"][0] == {
            "filename": "m1.png",
            "size": 8,
            "mimeType": "image/png",
            "uploadedAt": "2025-01-01T00:00:00Z",
        }
        prefixed = await ink.client.get(
            f"{API}/media/alice/novel?prefix=m2", headers=bearer(NOVEL_TOKEN)
        )
        assert [i["filename"] for i in prefixed.json()["items"]] == ["m2.webp"]

        file = await ink.client.get(f"{API}/media/alice/novel/m1.png", headers=bearer(NOVEL_TOKEN))
        assert file.status_code == 200 and file.content == STORED_BYTES
        assert file.headers["content-type"] == "image/png"

        for path in ("/media/bob/novel", "/media/alice/novel/theirs.png", "/media/a.b/c"):
            response = await ink.client.get(API + path, headers=bearer(NOVEL_TOKEN))
            assert response.status_code == 404, path
            assert set(response.json()) == {"message"}


async def test_uploads_are_stored_under_their_own_name_and_listed_as_sent() -> None:
    async with inkweld_gateway(novel_world()) as ink:
        headers = bearer(NOVEL_TOKEN)
        # The app's copy of a generated image: stored under its name, and the generated image
        # is listed under that name only from now on (no second copy for the app to download).
        known = await ink.client.post(
            f"{API}/media/alice/novel",
            files={"file": ("generated-1754550000000-0.png", STORED_BYTES, "image/png")},
            headers=headers,
        )
        body = assert_conforms("uploadProjectMedia", known)
        assert body["filename"] == "generated-1754550000000-0.png" and body["size"] == 8
        for name, data, kind in (
            ("other.png", b"someone else's", "image/png"),
            ("notes.pdf", b"%PDF-1.7 notes", "application/pdf"),
            ("blob.bin", b"\x00\x01", "application/octet-stream"),
        ):
            stored = await ink.client.post(
                f"{API}/media/alice/novel", files={"file": (name, data, kind)}, headers=headers
            )
            assert assert_conforms("uploadProjectMedia", stored)["filename"] == name
        listed = assert_conforms(
            "listProjectMedia", await ink.client.get(f"{API}/media/alice/novel", headers=headers)
        )
        sizes = {item["filename"]: (item["size"], item["mimeType"]) for item in listed["items"]}
        # m1's bytes are the app's generated-… file now; blob.bin is kept but, like the app's
        # backend, not listed (not a media type).
        assert sizes == {
            "generated-1754550000000-0.png": (8, "image/png"),
            "m2.webp": (8, "image/webp"),
            "notes.pdf": (14, "application/pdf"),
            "other.png": (14, "image/png"),
        }
        pdf = await ink.client.get(f"{API}/media/alice/novel/notes.pdf", headers=headers)
        assert pdf.content == b"%PDF-1.7 notes"
        assert pdf.headers["content-type"] == "application/pdf"

        nothing = await ink.client.post(
            f"{API}/media/alice/novel", data={"x": "1"}, headers=headers
        )
        assert nothing.status_code == 400
        malformed = await ink.client.post(
            f"{API}/media/alice/novel",
            content=b"--x\r\nbroken",
            headers={**headers, "Content-Type": "multipart/form-data; boundary=x"},
        )
        assert malformed.status_code == 400
        assert_conforms("uploadProjectMedia", malformed)
        elsewhere = await ink.client.post(
            f"{API}/media/bob/novel", files={"file": ("x.png", b"x", "image/png")}, headers=headers
        )
        assert elsewhere.status_code == 404


async def test_uploads_larger_than_the_limit_are_refused() -> None:
    env = {"ATELIER_GATEWAY_INKWELD_MAX_UPLOAD_BYTES": "4"}
    async with inkweld_gateway(novel_world(), env=env) as ink:
        response = await ink.client.post(
            f"{API}/media/alice/novel",
            files={"file": ("mine.png", STORED_BYTES, "image/png")},
            headers=bearer(NOVEL_TOKEN),
        )
        assert response.status_code == 400
        assert response.headers["x-atelier-error-code"] == "upload_too_large"
        assert "MAX_UPLOAD_BYTES" in assert_conforms("uploadProjectMedia", response)["message"]


async def test_images_handed_to_the_app_wait_for_its_copy_before_being_listed() -> None:
    for grace, listed_as_id in (("600", False), ("0", True)):
        env = {"ATELIER_GATEWAY_INKWELD_SYNC_GRACE_S": grace}
        async with inkweld_gateway(novel_world(), env=env) as ink:
            headers = bearer(NOVEL_TOKEN)
            generated = await ink.client.post(
                f"{API}/ai/image/generate",
                json=generate_body(projectKey="alice/novel"),
                headers=headers,
            )
            assert generated.status_code == 200, generated.text
            [media_id] = ink.world.delivered
            listed = (await ink.client.get(f"{API}/media/alice/novel", headers=headers)).json()
            names = {item["filename"] for item in listed["items"]}
            assert (f"{media_id}.png" in names) is listed_as_id


async def test_a_cover_is_any_image_stored_as_a_file_and_chosen_as_cover() -> None:
    async with inkweld_gateway(novel_world()) as ink:
        headers = bearer(NOVEL_TOKEN)
        none = await ink.client.get(f"{API}/projects/alice/novel/cover", headers=headers)
        assert none.status_code == 404
        assert_conforms("getProjectCover", none)

        cropped = b"a cropped cover, not a generated image"
        set_cover = await ink.client.post(
            f"{API}/projects/alice/novel/cover",
            files={"cover": ("blob", cropped, "image/png")},
            headers=headers,
        )
        body = assert_conforms("uploadProjectCover", set_cover)
        name = body["coverImage"]
        assert name.startswith("cover-") and name.endswith(".jpg")
        [assigned] = ink.world.assigned
        assert (assigned.target, assigned.project) == ("cover", "alice__novel")
        assert ink.world.media[assigned.media_id].source == "uploaded"
        # Read back through the media route, as the app does next.
        file = await ink.client.get(f"{API}/media/alice/novel/{name}", headers=headers)
        assert file.status_code == 200 and file.content == cropped
        assert file.headers["content-type"] == "image/jpeg"

        ink.world.cover = ink.world.media["m1"]  # media recorded a choice
        cover = await ink.client.get(f"{API}/projects/alice/novel/cover", headers=headers)
        assert cover.status_code == 200 and cover.content == STORED_BYTES
        anonymous = await ink.client.get(f"{API}/projects/alice/novel/cover")
        assert anonymous.status_code == 404  # the operation lists no 401

        kept = await ink.client.delete(f"{API}/projects/alice/novel/cover", headers=headers)
        assert kept.status_code == 403
        assert "another" in assert_conforms("deleteProjectCover", kept)["message"]
        ink.world.cover = None
        gone = await ink.client.delete(f"{API}/projects/alice/novel/cover", headers=headers)
        assert gone.status_code == 404


async def test_the_document_is_served(ink: InkweldHarness) -> None:
    response = await ink.client.get(f"{API}/openapi.json")
    assert response.json()["info"]["title"] == "Inkweld API (image generation subset)"


async def test_the_native_openapi_document_leaves_the_facade_out(ink: InkweldHarness) -> None:
    paths = (await ink.client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith("/api/")]


async def test_every_operation_of_the_document_is_served(ink: InkweldHarness) -> None:
    for path, item in spec()["paths"].items():
        concrete = path.replace("{profileId}", DALLE).replace("{auditId}", "x")
        concrete = concrete.replace("{username}", "alice").replace("{slug}", "novel")
        concrete = concrete.replace("{filename}", "m1.png")
        for method in item:
            response = await ink.client.request(method.upper(), concrete, json={})
            # An unrouted path gets the native error object; the facade's are strings.
            assert not isinstance(response.json().get("error"), dict), (method, path)


async def test_the_wait_rides_out_dispatch_being_away() -> None:
    """A queued job whose dispatch does not answer for a moment is waited for, not failed."""
    done = make_job("j", status=JobStatus.COMPLETED)

    class Stream:
        def __init__(self) -> None:
            self.closed = False

        async def close(self) -> None:
            self.closed = True

    class FlakyService:
        calls = 0

        async def open_job_stream(self, user: Any, job_id: str) -> Any:
            self.calls += 1
            if self.calls == 1:
                raise Unavailable("dispatch is away")
            if self.calls == 2:
                raise NotFound("not recorded yet")

            async def updates() -> Any:
                yield StatusUpdate(done)

            return SimpleNamespace(updates=updates(), subscription=Stream())

    service = FlakyService()
    job = await wait_for_final(service, User("alice", frozenset()), "j", 5)  # type: ignore[arg-type]
    assert job == done and service.calls == 3
