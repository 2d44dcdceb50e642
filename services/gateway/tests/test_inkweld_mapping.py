"""The facade's translations, both ways, without a broker or HTTP."""

from datetime import UTC, datetime
from typing import Any

import pytest
from gateway_testkit import NOW, make_job, make_media, make_profile
from inkweld_testkit import audit_record, openai_profile

from atelier_contracts.errors import ErrorClass, ErrorInfo, InvalidInput
from atelier_contracts.jobs import JobStatus
from atelier_contracts.profiles import AuditSummaryReply, AuditTally, Profile, ProfileFields
from atelier_gateway.inkweld.auth import has_admin_claim
from atelier_gateway.inkweld.endpoints.generation import wait_seconds
from atelier_gateway.inkweld.errors import documented_status, operation_errors
from atelier_gateway.inkweld.mapping import (
    audits,
    generation,
    media,
    profiles,
    projects,
    providers,
    sizes,
)
from atelier_gateway.inkweld.models import (
    CreateImageModelProfileRequest,
    ImageGenerateRequest,
    UpdateImageModelProfileRequest,
)

# --- providers --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["openai", "openrouter", "stable-diffusion", "falai", "workersai"])
def test_the_apps_providers_are_atelier_adapters_of_the_same_name(name: Any) -> None:
    assert providers.atelier_provider(name) == name
    assert providers.inkweld_provider(name, {}) == name


def test_other_providers_are_hidden_unless_aliased() -> None:
    assert providers.inkweld_provider("offline", {}) is None
    assert providers.inkweld_provider("gemini", {"gemini": "openrouter"}) == "openrouter"
    assert providers.inkweld_provider("gemini", {"gemini": "midjourney"}) is None
    # An alias never renames one of the app's own providers.
    assert providers.inkweld_provider("openai", {"openai": "falai"}) == "openai"


def test_visible_profiles_keep_atelier_order() -> None:
    shown = providers.visible_profiles(
        [
            openai_profile(id="b", name="b", sort_order=2),
            make_profile(id="off", name="offline"),
            openai_profile(id="a", name="A", sort_order=2),
            openai_profile(id="z", name="z", sort_order=0),
        ],
        {},
    )
    assert [(p.id, name) for p, name in shown] == [
        ("z", "openai"),
        ("a", "openai"),
        ("b", "openai"),
    ]


# --- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("1024x1024", "1024x1024"),
        (" 1792X1024 ", "1792x1024"),
        ("16:9", "1344x768"),
        ("auto", None),
    ],
)
def test_profile_size_of_an_app_size(value: str, size: str | None) -> None:
    assert sizes.profile_size(value) == size


@pytest.mark.parametrize("value", ["big", "16/9", "0x10", "1:0"])
def test_what_is_not_a_size_is_refused(value: str) -> None:
    with pytest.raises(InvalidInput, match="not a size"):
        sizes.profile_size(value)


def test_a_ratio_picks_the_profiles_nearest_size() -> None:
    dalle = openai_profile()  # 1024x1024, 1792x1024, 1024x1792
    assert sizes.requested_size("16:9", dalle) == "1792x1024"
    assert sizes.requested_size("9:16", dalle) == "1024x1792"
    assert sizes.requested_size("1:1", dalle) == "1024x1024"
    # Nothing near 21:9: the preset, which the profile's own check then refuses by name.
    assert sizes.requested_size("21:9", dalle) == "1536x672"
    assert sizes.requested_size("auto", dalle) is None
    assert sizes.requested_size(None, dalle) is None
    assert sizes.requested_size("512x512", dalle) == "512x512"


def test_sizes_show_as_ratios_on_aspect_ratio_profiles() -> None:
    assert sizes.inkweld_size("1344x768", aspect_ratio_only=True) == "16:9"
    assert sizes.inkweld_size("1000x1000", aspect_ratio_only=True) == "1000x1000"
    assert sizes.inkweld_size("1344x768", aspect_ratio_only=False) == "1344x768"


# --- profiles ---------------------------------------------------------------------------------


def _stored(fields: ProfileFields, profile_id: str = "p1") -> Profile:
    return Profile(**fields.model_dump(), id=profile_id, created_at=NOW, updated_at=NOW)


FORM: dict[str, Any] = {
    "name": "Landscapes",
    "description": "Wide and calm",
    "provider": "stable-diffusion",
    "modelId": "sdxl_base_1.0",
    "enabled": True,
    "supportsImageInput": True,
    "supportsCustomResolutions": False,
    "usesAspectRatioOnly": True,
    "supportedSizes": ["16:9", "1:1"],
    "defaultSize": "16:9",
    "modelConfig": {"baseUrl": "http://a1111.local:7860", "sampler": "DPM++ 2M"},
    "sortOrder": 3,
    "creditCost": 2,
}


def test_a_profile_made_from_the_form_shows_the_form_again() -> None:
    fields = profiles.profile_fields_for_create(CreateImageModelProfileRequest.model_validate(FORM))
    assert fields.provider == "stable-diffusion" and fields.model == "sdxl_base_1.0"
    assert fields.sizes == ["1344x768", "1024x1024"] and fields.default_size == "1344x768"
    assert fields.base_url == "http://a1111.local:7860"
    assert fields.provider_config["sampler"] == "DPM++ 2M"
    assert [o.name for o in fields.options] == ["negative_prompt"]
    # A1111's img2img repaints one init image (`capabilities("stable-diffusion", ...)`).
    assert fields.counts == [1, 2, 4] and fields.max_reference_images == 1
    assert fields.prompt_max_length == 16000

    shown = profiles.admin_profile(_stored(fields), "stable-diffusion").model_dump(mode="json")
    for key, value in FORM.items():
        assert shown[key] == value, key


def test_create_leaves_what_the_form_does_not_say_to_the_model() -> None:
    request = CreateImageModelProfileRequest(name="GPT", provider="openai", modelId="gpt-image-1")
    fields = profiles.profile_fields_for_create(request)
    assert fields.sizes == ["1024x1024", "1024x1536", "1536x1024"]  # what the model makes
    assert fields.default_size == "1024x1024" and fields.options == []  # takes no standard/hd
    assert fields.max_reference_images == 0 and fields.credit_cost == 1.0


def test_update_changes_only_the_fields_present() -> None:
    current = _stored(
        profiles.profile_fields_for_create(CreateImageModelProfileRequest.model_validate(FORM))
    )
    request = UpdateImageModelProfileRequest.model_validate(
        {"name": "Renamed", "supportsImageInput": False, "modelConfig": None}
    )
    fields = profiles.profile_fields_for_update(current, request, "stable-diffusion")
    assert fields.name == "Renamed" and fields.max_reference_images == 0
    assert fields.base_url is None
    assert fields.provider_config == {
        "inkweld": {"description": "Wide and calm", "usesAspectRatioOnly": True}
    }
    assert (fields.sizes, fields.default_size, fields.options) == (
        current.sizes,
        current.default_size,
        current.options,
    )


def test_update_cannot_smuggle_presentation_or_nulls() -> None:
    current = openai_profile()
    sneaky = UpdateImageModelProfileRequest.model_validate(
        {"modelConfig": {"inkweld": {"description": "x"}, "user": "u"}}
    )
    fields = profiles.profile_fields_for_update(current, sneaky, "openai")
    assert fields.provider_config["inkweld"] == current.provider_config["inkweld"]
    for field in ("name", "enabled", "sortOrder", "creditCost", "provider"):
        with pytest.raises(InvalidInput, match=f"{field}: must not be null"):
            profiles.profile_fields_for_update(
                current, UpdateImageModelProfileRequest.model_validate({field: None}), "openai"
            )
    with pytest.raises(InvalidInput, match="supportedSizes"):
        profiles.profile_fields_for_update(
            current,
            UpdateImageModelProfileRequest(supportsCustomResolutions=True),
            "openai",
        )


def test_profiles_made_elsewhere_show_sensible_values() -> None:
    shown = profiles.public_profile(make_profile(provider_config={"inkweld": "garbage"}), "openai")
    assert shown.description is None and shown.usesAspectRatioOnly is False
    assert shown.supportsImageInput is True  # the sketch profile takes 2 reference images


# --- projects and the generate request --------------------------------------------------------


def test_project_keys() -> None:
    assert projects.project_of("alice", "my-novel") == "alice__my-novel"
    assert projects.project_of("a.b", "novel") is None
    assert projects.project_of("a" * 60, "b" * 60) is None  # longer than a project id
    assert projects.project_of_key("alice/my-novel") == "alice__my-novel"
    assert projects.project_of_key("demo-project") == "demo-project"
    assert projects.project_of_key("a/b/c") is None
    assert projects.generation_project(None, {"only"}) == "only"
    with pytest.raises(InvalidInput, match="projectKey"):
        projects.generation_project(None, {"one", "two"})
    with pytest.raises(InvalidInput, match="no project"):
        projects.generation_project(None, set())


def test_options_only_where_the_profile_declares_them() -> None:
    body = ImageGenerateRequest(
        prompt="p", profileId="x", quality="hd", style="vivid", negativePrompt="fog"
    )
    assert generation.generation_request(body, "alpha", openai_profile(), {}).options == {
        "quality": "hd",
        "style": "vivid",
    }
    assert generation.generation_request(body, "alpha", make_profile(), {}).options == {
        "negative_prompt": "fog"
    }


def test_too_many_elements_is_an_invalid_input() -> None:
    element = {"elementId": "e", "name": "E", "type": "t", "role": "subject", "data": {}}
    body = ImageGenerateRequest.model_validate(
        {"prompt": "p", "profileId": "x", "worldbuildingContext": [element] * 17}
    )
    with pytest.raises(InvalidInput, match="elements"):
        generation.generation_request(body, "alpha", None, {})


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ErrorClass.CONTENT_BLOCKED, 400),
        (ErrorClass.INVALID_REQUEST, 400),
        (ErrorClass.PROVIDER_UNAVAILABLE, 503),
        (ErrorClass.TIMEOUT, 503),
        (ErrorClass.AUTH, 503),
    ],
)
def test_job_failures(error: ErrorClass, status: int) -> None:
    job = make_job("j", status=JobStatus.FAILED, error=ErrorInfo.of(error))
    failure = generation.job_failure(job)
    assert (failure.status_code, failure.code) == (status, error.value)
    cancelled = generation.job_failure(make_job("j", status=JobStatus.CANCELLED))
    assert cancelled.status_code == 400 and "cancelled" in cancelled.message


# --- audits and media -------------------------------------------------------------------------


def test_audit_outcomes_the_app_has_no_word_for_go_into_the_message() -> None:
    assert audits.inkweld_audit(audit_record("j")).message is None
    failed = audit_record(
        "j",
        status="failed",
        landed=0,
        failed=1,
        error={"error_class": "timeout", "message": "Too slow."},
    )
    shown = audits.inkweld_audit(failed)
    assert shown.status == "success" and shown.message == "failed: 0 of 1 images landed; Too slow."
    reason = "'DALL-E 3' (openai) was unavailable after 3 attempts: timeout"
    fell_back = audit_record(
        "j",
        fallbacks=[{"index": 0, "media_id": "m", "profile_name": "Sketch", "reason": reason}],
    )
    assert audits.inkweld_audit(fell_back).message == f"image 1 made by 'Sketch' ({reason})"


def test_audit_query_pages_and_dates() -> None:
    query = audits.audit_query(page=3, limit=20, start_date="2025-01-02")
    assert (query.offset, query.limit) == (40, 20)
    assert query.since == datetime(2025, 1, 2, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="search"):
        audits.audit_query(search="a\x00b")


def test_audit_stats_of_an_empty_audit() -> None:
    stats = audits.audit_stats(AuditSummaryReply(total=AuditTally()))
    assert stats.totalRequests == 0 and stats.byUser == [] and stats.byProfile == []


def test_media_file_names() -> None:
    item = make_media("abc", content_type="image/webp")
    assert media.media_filename(item) == "abc.webp"
    assert media.media_id_of("abc.webp") == "abc"
    assert media.media_id_of("abc.PNG") == "abc"
    assert media.media_id_of("no-extension") == "no-extension"
    assert media.media_id_of("v1.2.tar") == "v1.2.tar"


# --- errors, waits and claims -----------------------------------------------------------------


def test_statuses_become_ones_the_operation_lists() -> None:
    generate, style = operation_errors("generateImage")
    assert generate == {200, 400, 401, 503} and style == "error"
    assert documented_status(422, "size_not_allowed", generate) == 400
    assert documented_status(429, "quota_exceeded", generate) == 400
    assert documented_status(403, "generation_disabled", generate) == 503
    assert documented_status(502, "storage_error", generate) == 503
    cover, style = operation_errors("getProjectCover")
    assert style == "message" and documented_status(401, "unauthorized", cover) == 404
    audits, _ = operation_errors("adminListImageAudits")
    assert documented_status(422, "invalid_input", audits) == 403


def test_prefer_wait() -> None:
    assert wait_seconds(None, 120) == 120
    assert wait_seconds("wait=5", 120) == 5
    assert wait_seconds("respond-async, wait=2.5", 120) == 2.5
    assert wait_seconds("wait=600", 120) == 120
    assert wait_seconds("handling=lenient", 120) == 120


def test_admin_claims() -> None:
    import jwt

    def token(**claims: Any) -> str:
        return jwt.encode({"sub": "x", **claims}, "k" * 32, algorithm="HS256")

    assert has_admin_claim(token(roles=["writer", "admin"]))
    assert has_admin_claim(token(admin=True))
    assert not has_admin_claim(token(roles=["writer"]))
    assert not has_admin_claim(token(admin="true"))
    assert not has_admin_claim(token())
