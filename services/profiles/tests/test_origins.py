"""Provider keys go only where an operator allowed (issue 15, item 1): a profile's `base_url` must
be its provider's own endpoint or an origin an operator bound to the key (or allowed for the whole
deployment), whichever way the profile comes in: the admin API, or the NATS commands an app
admin's routes use, which have no way to widen the list."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from atelier_contracts.errors import InvalidInput
from atelier_contracts.profiles import (
    CredentialQuery,
    CredentialReply,
    ProfileCommandReply,
    ProfileCreateCommand,
    ProfileReplaceCommand,
)
from atelier_contracts.subjects import Subject
from atelier_contracts.testing import QUERY_TIMEOUT_S
from atelier_messaging import query
from atelier_profiles.origins import OriginPolicy
from atelier_profiles.service import ProfileService
from atelier_profiles.settings import Settings

from .conftest import RunningApp, profile_fields

KEY = "sk-proj-TopSecretKey-0123456789abcdefXYZ"
LOCAL = "http://127.0.0.1:9999"


def openai_profile(base_url: str | None, **overrides: Any) -> dict[str, Any]:
    return {
        "name": overrides.pop("name", "GPT image"),
        "provider": "openai",
        "model": "gpt-image-1",
        "sizes": ["1024x1024"],
        "default_size": "1024x1024",
        "counts": [1],
        "base_url": base_url,
        **overrides,
    }


@pytest.mark.parametrize(
    ("base_url", "reason"),
    [
        (f"{LOCAL}/v1", "http://127.0.0.1:9999 is a loopback address"),
        ("http://169.254.169.254/", "http://169.254.169.254 is a cloud metadata address"),
        ("http://[2002:a9fe:a9fe::]/v1", "a cloud metadata address (169.254.169.254, inside"),
        ("http://localhost:8080/v1", "http://localhost:8080 is a loopback host"),
        ("http://10.0.0.5:7860", "http://10.0.0.5:7860 is a private address"),
        ("https://collector.example/v1", "is not openai's own endpoint (https://api.openai.com)"),
        ("http://api.openai.com/v1", "is not openai's own endpoint"),  # plain http: another origin
    ],
)
async def test_the_admin_api_refuses_a_base_url_no_operator_allowed(
    running_app: RunningApp, base_url: str, reason: str
) -> None:
    answer = await running_app.client.post("/admin/v1/profiles", json=openai_profile(base_url))
    assert answer.status_code == 422, answer.text
    message = answer.json()["error"]["message"]
    assert reason in message
    assert "PUT /admin/v1/providers/openai/credentials" in message
    assert "ATELIER_PROFILES_ALLOWED_BASE_URL_ORIGINS" in message
    assert await running_app.service.list_profiles(include_disabled=True) == []


async def test_the_providers_own_endpoint_needs_no_approval(running_app: RunningApp) -> None:
    for base_url in (None, "https://api.openai.com/v1", "https://API.openai.com:443/v1/"):
        answer = await running_app.client.post(
            "/admin/v1/profiles", json=openai_profile(base_url, name=f"GPT {base_url}")
        )
        assert answer.status_code == 201, answer.text


async def test_the_exfiltration_attempt_over_the_nats_commands_is_refused(
    running_app: RunningApp,
) -> None:
    """What the gateway's Inkweld admin route sends for `modelConfig.baseUrl`: the app's admin
    role reaches profiles only through these commands, which carry no origins."""
    await running_app.client.put("/admin/v1/providers/openai/credentials", json={"api_key": KEY})
    fields = profile_fields(**openai_profile(f"{LOCAL}/v1", options=[]))
    created = await query(
        running_app.broker,
        Subject.PROFILES_CREATE,
        ProfileCreateCommand(fields=fields, requested_by="app-admin"),
        ProfileCommandReply,
        timeout=QUERY_TIMEOUT_S,
    )
    assert created.profile is None and created.error is not None
    assert created.error.status == 422 and created.error.code == "invalid_input"
    assert "loopback address" in created.error.message

    for url in ("http://169.254.169.254/", "http://[::ffff:169.254.169.254]/"):
        fields = profile_fields(**openai_profile(url, options=[]))
        created = await query(
            running_app.broker,
            Subject.PROFILES_CREATE,
            ProfileCreateCommand(fields=fields, requested_by="app-admin"),
            ProfileCommandReply,
            timeout=QUERY_TIMEOUT_S,
        )
        assert created.error is not None and "cloud metadata address" in created.error.message

    # A profile with the provider's own endpoint, then pointed elsewhere: refused as well.
    fields = profile_fields(**openai_profile(None, options=[]))
    created = await query(
        running_app.broker,
        Subject.PROFILES_CREATE,
        ProfileCreateCommand(fields=fields, requested_by="app-admin"),
        ProfileCommandReply,
        timeout=QUERY_TIMEOUT_S,
    )
    assert created.profile is not None
    replaced = await query(
        running_app.broker,
        Subject.PROFILES_REPLACE,
        ProfileReplaceCommand(
            profile_id=created.profile.id,
            fields=fields.model_copy(update={"base_url": "https://collector.example/v1"}),
            requested_by="app-admin",
        ),
        ProfileCommandReply,
        timeout=QUERY_TIMEOUT_S,
    )
    assert replaced.error is not None and replaced.error.status == 422
    stored = await running_app.service.get_profile(created.profile.id)
    assert stored.base_url is None
    # The command has no field that could allow an origin: anything extra is not read.
    assert (
        "allowed_origins"
        not in ProfileCreateCommand.model_json_schema()["$defs"]["ProfileFields"]["properties"]
    )


async def test_a_patch_cannot_point_a_profile_elsewhere(running_app: RunningApp) -> None:
    created = await running_app.client.post("/admin/v1/profiles", json=openai_profile(None))
    profile_id = created.json()["id"]
    patched = await running_app.client.patch(
        f"/admin/v1/profiles/{profile_id}", json={"base_url": "http://169.254.169.254/latest"}
    )
    assert patched.status_code == 422
    assert "cloud metadata address" in patched.json()["error"]["message"]


async def test_an_operator_binds_origins_to_the_key(running_app: RunningApp) -> None:
    stored = await running_app.client.put(
        "/admin/v1/providers/openai/credentials",
        json={"api_key": KEY, "allowed_origins": [f"{LOCAL}/", "https://Proxy.example"]},
    )
    assert stored.status_code == 200, stored.text
    status = stored.json()
    assert status["allowed_origins"] == [LOCAL, "https://proxy.example"]
    assert status["default_origins"] == ["https://api.openai.com"]
    assert KEY not in stored.text

    allowed = await running_app.client.post(
        "/admin/v1/profiles", json=openai_profile(f"{LOCAL}/v1")
    )
    assert allowed.status_code == 201, allowed.text
    # Exactly that origin: another port on the same host is still refused.
    other_port = await running_app.client.post(
        "/admin/v1/profiles", json=openai_profile("http://127.0.0.1:9998/v1", name="Other")
    )
    assert other_port.status_code == 422

    # The worker gets the origins with the key.
    reply = await query(
        running_app.broker,
        Subject.PROFILES_CREDENTIALS,
        CredentialQuery(provider="openai"),
        CredentialReply,
        timeout=QUERY_TIMEOUT_S,
    )
    assert reply.configured and reply.allowed_origins == [LOCAL, "https://proxy.example"]

    # Stored again without them: the key goes only to OpenAI, new profiles elsewhere refused.
    await running_app.client.put("/admin/v1/providers/openai/credentials", json={"api_key": KEY})
    again = await running_app.client.post(
        "/admin/v1/profiles", json=openai_profile(f"{LOCAL}/v2", name="Again")
    )
    assert again.status_code == 422


@pytest.mark.parametrize(
    "origin",
    ["http://10.0.0.5:7860/sdapi/v1", "ftp://10.0.0.5", "http://user:pw@10.0.0.5", "10.0.0.5"],
)
async def test_allowed_origins_are_origins(running_app: RunningApp, origin: str) -> None:
    answer = await running_app.client.put(
        "/admin/v1/providers/openai/credentials",
        json={"api_key": KEY, "allowed_origins": [origin]},
    )
    assert answer.status_code == 422
    assert "allowed_origins" in answer.json()["error"]["message"]


async def test_the_deployment_allows_origins_for_keyless_self_hosted_servers(
    service: ProfileService,
) -> None:
    settings = Settings(
        allowed_base_url_origins={
            "stable-diffusion": ["http://10.0.0.5:7860/"],
            "*": ["https://gateway.example"],
        }
    )
    policy = OriginPolicy(settings.allowed_base_url_origins)
    service.origins = policy
    sd = profile_fields(
        name="A1111", provider="stable-diffusion", model="sdxl", options=[], counts=[1]
    )
    await service.create_profile(sd.model_copy(update={"base_url": "http://10.0.0.5:7860"}))
    await service.create_profile(
        sd.model_copy(update={"name": "Via gateway", "base_url": "https://gateway.example/sd"})
    )
    with pytest.raises(InvalidInput, match=re.escape("10.0.0.6:7860 is a private address")):
        await service.create_profile(
            sd.model_copy(update={"name": "Other", "base_url": "http://10.0.0.6:7860"})
        )
    # Allowed for stable-diffusion's keys, not for OpenAI's.
    assert policy.deployment_origins("openai") == ["https://gateway.example"]
    with pytest.raises(InvalidInput, match=re.escape("10.0.0.5:7860 is a private address")):
        await service.create_profile(
            profile_fields(**openai_profile("http://10.0.0.5:7860", name="O", options=[]))
        )


def test_the_deployment_setting_is_checked() -> None:
    with pytest.raises(ValidationError, match="no path"):
        Settings(allowed_base_url_origins={"comfyui": ["http://10.0.0.5:8188/prompt"]})
    with pytest.raises(ValidationError, match="not a provider"):
        Settings(allowed_base_url_origins={"nope": ["http://10.0.0.5:8188"]})


async def test_the_offline_provider_sends_nothing_so_any_base_url_is_inert(
    service: ProfileService,
) -> None:
    profile = await service.create_profile(profile_fields(base_url="http://127.0.0.1:1/"))
    assert profile.base_url == "http://127.0.0.1:1/"
