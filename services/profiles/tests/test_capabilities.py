"""Capability checks: a profile its provider and model cannot serve is refused with the reason;
and the fallback chain (exists, no cycles)."""

from __future__ import annotations

from typing import Any

import pytest

from atelier_contracts.errors import Conflict, InvalidInput
from atelier_contracts.providers import capabilities, images_per_call
from atelier_profiles.service import ProfilePatch, ProfileService
from atelier_profiles.validation import capability_problems, fallback_problems

from .conftest import RunningApp, profile_fields


def openai(model: str = "gpt-image-1", **overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "name": f"OpenAI {model}",
        "provider": "openai",
        "model": model,
        "sizes": ["1024x1024"],
        "default_size": "1024x1024",
        "counts": [1, 2, 4],
        "options": [],
        "base_url": None,
        "provider_config": {},
    }
    fields.update(overrides)
    return profile_fields(**fields)


def problems_of(**overrides: Any) -> str:
    return "; ".join(capability_problems(openai(**overrides)))


def test_a_plain_gpt_image_profile_is_fine() -> None:
    options = [
        {"name": "quality", "kind": "enum", "values": ["low", "high"], "default": "low"},
        {"name": "output_compression", "kind": "integer", "minimum": 0, "maximum": 100},
    ]
    assert capability_problems(openai(options=options, max_reference_images=4)) == []


def test_dall_e_3_may_offer_several_images_because_dispatch_splits_them() -> None:
    assert images_per_call("openai", "dall-e-3") == 1
    assert capability_problems(openai("dall-e-3", counts=[1, 2, 4])) == []


@pytest.mark.parametrize("option", ["negative_prompt", "seed"])
def test_openai_refuses_options_it_has_no_parameter_for(option: str) -> None:
    kind = "string" if option == "negative_prompt" else "integer"
    message = problems_of(options=[{"name": option, "kind": kind}])
    assert f"options.{option}:" in message
    assert "OpenAI" in message


def test_seed_is_refused_even_for_an_unknown_openai_compatible_model() -> None:
    seed = [{"name": "seed", "kind": "integer"}]
    assert "options.seed" in problems_of(model="my-gateway-model", options=seed)


def test_unknown_openai_models_are_held_only_to_what_never_works() -> None:
    fields = openai(
        "flux-behind-a-gateway",
        sizes=["832x1216", "1024x1024"],
        options=[{"name": "style", "kind": "string"}],
        max_reference_images=8,
        prompt_max_length=20000,
    )
    assert capability_problems(fields) == []


def test_sizes_a_model_does_not_make_are_named_with_the_ones_it_does() -> None:
    message = problems_of(model="dall-e-3", sizes=["1024x1024", "512x512"])
    assert "sizes:" in message and "'512x512'" not in message
    assert "512x512" in message and "1792x1024" in message


def test_option_values_and_kinds_must_fit_the_model() -> None:
    message = problems_of(
        model="dall-e-3",
        options=[
            {"name": "quality", "kind": "enum", "values": ["standard", "ultra"]},
            {"name": "style", "kind": "string"},
            {"name": "background", "kind": "enum", "values": ["auto"]},
        ],
    )
    assert "options.quality" in message and "ultra" in message
    assert "options.style: declare it as enum" in message
    assert "options.background" in message and "has no such option" in message


def test_numeric_options_must_stay_in_the_providers_range() -> None:
    unbounded = [{"name": "output_compression", "kind": "integer"}]
    too_wide = [{"name": "output_compression", "kind": "integer", "minimum": 0, "maximum": 101}]
    assert "0..100" in problems_of(options=unbounded)
    assert "0..100" in problems_of(options=too_wide)


def test_more_reference_images_than_the_model_takes() -> None:
    assert "takes no reference images, not 1" in problems_of(
        model="dall-e-3", max_reference_images=1
    )
    assert problems_of(max_reference_images=16) == ""  # GPT-image takes up to 16
    assert capabilities("openai", "gpt-image-1").max_reference_images == 16


def test_prompt_limit_above_the_models() -> None:
    assert "at most 1000 characters" in problems_of(
        model="dall-e-2", sizes=["512x512"], default_size="512x512", prompt_max_length=4000
    )


def test_unknown_provider_is_refused_and_offline_takes_anything_sensible() -> None:
    assert "has no worker" in "; ".join(capability_problems(profile_fields(provider="nobody")))
    assert capability_problems(profile_fields()) == []  # offline, custom options
    huge = profile_fields(sizes=["99999x99999"], default_size="99999x99999")
    assert "pixels" in "; ".join(capability_problems(huge))


async def test_the_api_refuses_an_impossible_profile_with_every_reason(
    running_app: RunningApp,
) -> None:
    body = openai(
        "dall-e-3",
        sizes=["1024x1024", "256x256"],
        options=[{"name": "negative_prompt", "kind": "string"}],
    ).model_dump()
    response = await running_app.client.post("/admin/v1/profiles", json=body)
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert "sizes:" in message and "options.negative_prompt:" in message
    assert running_app.changes == []


# --- the fallback chain ----------------------------------------------------------------------


def test_fallback_rules_without_a_database() -> None:
    links: dict[str, str | None] = {"a": "b", "b": "c", "c": None}
    assert fallback_problems("a", None, links) == []
    assert fallback_problems(None, "a", links) == []  # a new profile cannot close a loop
    assert "itself" in fallback_problems("a", "a", links)[0]
    assert "no profile" in fallback_problems("a", "zzz", links)[0]
    assert "chain" in fallback_problems("c", "a", links)[0]  # c → a → b → c
    assert fallback_problems("c", "b", {"a": "b", "b": None, "c": None}) == []


async def test_fallback_chain_is_stored_checked_and_protects_its_targets(
    service: ProfileService,
) -> None:
    c = await service.create_profile(profile_fields(name="C"))
    b = await service.create_profile(profile_fields(name="B", fallback_profile_id=c.id))
    a = await service.create_profile(profile_fields(name="A", fallback_profile_id=b.id))
    assert (await service.get_profile(a.id)).fallback_profile_id == b.id

    with pytest.raises(InvalidInput, match="chain"):
        await service.patch_profile(c.id, ProfilePatch(fallback_profile_id=a.id))
    with pytest.raises(InvalidInput, match="itself"):
        await service.patch_profile(a.id, ProfilePatch(fallback_profile_id=a.id))
    with pytest.raises(InvalidInput, match="no profile"):
        await service.create_profile(profile_fields(name="D", fallback_profile_id="missing"))
    with pytest.raises(Conflict, match="B fall back"):
        await service.delete_profile(c.id)

    await service.patch_profile(b.id, ProfilePatch(fallback_profile_id=None))
    await service.delete_profile(c.id)
