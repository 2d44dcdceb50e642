"""The app's own sign-in beside its backend (docs/inkweld.md, "Who may call").

The gateway on the in-memory broker; the app's backend is the fake one from `atelier_fakes`,
served for real on a loopback port: Atelier asks it, with the writer's token, who may read or
write a project and who is an admin.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from inkweld_testkit import (
    InkweldHarness,
    InkweldWorld,
    assert_conforms,
    bearer,
    inkweld_gateway,
    openai_profile,
)

from atelier_fakes import run_fake_in_thread
from atelier_fakes.inkweld_backend import AppProject, AppUser, FakeInkweldBackend
from atelier_gateway.inkweld.app_auth import looks_like_app_token, verify_app_token
from atelier_gateway.inkweld.settings import InkweldSettings

APP_KEY = "the-app's-own-database-key-of-at-least-32-chars"
OLD_KEY = "the-key-the-app-signed-with-before-the-rotation"
DALLE = openai_profile().id
API = "/api/v1"


@pytest.fixture
def backend() -> Iterator[tuple[FakeInkweldBackend, str]]:
    fake = FakeInkweldBackend(
        secret=APP_KEY,
        users={
            "u-alice": AppUser("u-alice", "alice"),
            "u-bob": AppUser("u-bob", "bob"),
            "u-root": AppUser("u-root", "root", is_admin=True),
            "u-gone": AppUser("u-gone", "gone", enabled=False),
        },
        projects=[AppProject("alice", "novel", {"bob": "viewer"}), AppProject("alice", "saga")],
        renamed={("alice", "old-novel"): "novel"},
    )
    url, stop = run_fake_in_thread(fake.app())
    try:
        yield fake, url
    finally:
        stop()


@pytest.fixture
async def ink(backend: tuple[FakeInkweldBackend, str]) -> AsyncIterator[InkweldHarness]:
    _, url = backend
    env = {
        "ATELIER_GATEWAY_INKWELD_APP_JWT_SECRETS": json.dumps([APP_KEY, OLD_KEY]),
        "ATELIER_GATEWAY_INKWELD_APP_BACKEND_URL": url,
    }
    world = InkweldWorld(profiles=[openai_profile()])
    async with inkweld_gateway(world, env=env) as harness:
        yield harness


def generate_body(**overrides: Any) -> dict[str, Any]:
    return {"prompt": "A lighthouse", "profileId": DALLE, "projectKey": "alice/novel", **overrides}


# --- tokens -------------------------------------------------------------------------------------


def test_app_tokens_are_told_apart_and_verified_with_any_configured_key(
    backend: tuple[FakeInkweldBackend, str],
) -> None:
    fake, _ = backend
    token = fake.token("u-alice", secret=OLD_KEY)  # signed before a rotation
    assert looks_like_app_token(token)
    identity = verify_app_token(token, [APP_KEY, OLD_KEY])
    assert (identity.user_id, identity.username) == ("u-alice", "alice")
    assert not looks_like_app_token("not a jwt")


async def test_a_writer_with_write_access_generates(
    ink: InkweldHarness, backend: tuple[FakeInkweldBackend, str]
) -> None:
    fake, _ = backend
    response = await ink.client.post(
        f"{API}/ai/image/generate", json=generate_body(), headers=bearer(fake.token("u-alice"))
    )
    body = assert_conforms("generateImage", response)
    [event] = ink.world.published
    assert (event.project, event.user_id) == ("alice__novel", "u-alice")
    assert body["data"][0]["b64Json"]


async def test_a_viewer_reads_but_cannot_generate_or_upload(
    ink: InkweldHarness, backend: tuple[FakeInkweldBackend, str]
) -> None:
    fake, _ = backend
    viewer = bearer(fake.token("u-bob"))
    refused = await ink.client.post(
        f"{API}/ai/image/generate", json=generate_body(), headers=viewer
    )
    assert refused.status_code == 400  # generate lists no 403: the nearest it lists
    assert refused.headers["x-atelier-error-code"] == "forbidden"
    assert "editor" in assert_conforms("generateImage", refused)["error"]
    assert ink.world.published == []
    listed = await ink.client.get(f"{API}/media/alice/novel", headers=viewer)
    assert listed.status_code == 200, listed.text
    streamed = await ink.client.post(
        f"{API}/ai/image/generate-stream", json=generate_body(), headers=viewer
    )
    assert streamed.status_code == 403
    assert "editor" in streamed.json()["error"]


async def test_projects_a_writer_cannot_see_are_not_found(
    ink: InkweldHarness, backend: tuple[FakeInkweldBackend, str]
) -> None:
    fake, _ = backend
    bob = bearer(fake.token("u-bob"))
    for path in ("alice/saga", "alice/nothing-here"):  # 403 and 404 at the app
        response = await ink.client.get(f"{API}/media/{path}", headers=bob)
        assert response.status_code in (403, 404), response.text
    unknown = await ink.client.get(f"{API}/media/alice/nothing-here", headers=bob)
    assert unknown.status_code == 404
    assert_conforms("listProjectMedia", unknown)
    generate = await ink.client.post(
        f"{API}/ai/image/generate",
        json=generate_body(projectKey="alice/nothing-here"),
        headers=bob,
    )
    assert generate.status_code == 400 and generate.headers["x-atelier-error-code"] == "not_found"


async def test_a_renamed_project_is_followed(
    ink: InkweldHarness, backend: tuple[FakeInkweldBackend, str]
) -> None:
    fake, _ = backend
    response = await ink.client.post(
        f"{API}/ai/image/generate",
        json=generate_body(projectKey="alice/old-novel"),
        headers=bearer(fake.token("u-alice")),
    )
    assert response.status_code == 200, response.text
    assert ink.world.published[0].project == "alice__novel"


async def test_enrolment_expired_and_forged_tokens(
    ink: InkweldHarness, backend: tuple[FakeInkweldBackend, str]
) -> None:
    fake, _ = backend
    enrol = await ink.client.get(
        f"{API}/ai/image-profiles", headers=bearer(fake.token("u-alice", scope="enrol"))
    )
    # Valid but for passkey enrolment only: refused, never a 401 (the app would sign out).
    assert enrol.status_code == 403 and enrol.headers["x-atelier-error-code"] == "token_scope"
    for token in (
        fake.token("u-alice", expires_in=-3600),
        fake.token("u-alice", secret="someone-else's-key-of-thirty-two-chars!"),
    ):
        refused = await ink.client.get(f"{API}/ai/image-profiles", headers=bearer(token))
        assert refused.status_code == 401
    ok = await ink.client.get(f"{API}/ai/image-profiles", headers=bearer(fake.token("u-alice")))
    assert ok.status_code == 200


async def test_admin_is_the_apps_own_flag(
    ink: InkweldHarness, backend: tuple[FakeInkweldBackend, str]
) -> None:
    fake, _ = backend
    admin = await ink.client.get(
        f"{API}/admin/image-profiles", headers=bearer(fake.token("u-root"))
    )
    assert admin.status_code == 200, admin.text
    writer = await ink.client.get(
        f"{API}/admin/image-profiles", headers=bearer(fake.token("u-alice"))
    )
    assert writer.status_code == 403
    disabled = await ink.client.get(
        f"{API}/admin/image-profiles", headers=bearer(fake.token("u-gone"))
    )
    assert disabled.status_code == 403


async def test_answers_are_cached_briefly(
    ink: InkweldHarness, backend: tuple[FakeInkweldBackend, str]
) -> None:
    fake, _ = backend
    headers = bearer(fake.token("u-alice"))
    for _ in range(3):
        listed = await ink.client.get(f"{API}/media/alice/novel", headers=headers)
        assert listed.status_code == 200
    assert fake.calls.count("/api/v1/projects/alice/novel") == 1


async def test_an_unreachable_app_backend_is_503_never_401(
    backend: tuple[FakeInkweldBackend, str],
) -> None:
    fake, _ = backend
    env = {
        "ATELIER_GATEWAY_INKWELD_APP_JWT_SECRETS": json.dumps([APP_KEY]),
        "ATELIER_GATEWAY_INKWELD_APP_BACKEND_URL": "http://127.0.0.1:9",  # nothing listens
    }
    async with inkweld_gateway(InkweldWorld(profiles=[openai_profile()]), env=env) as ink:
        response = await ink.client.get(
            f"{API}/media/alice/novel", headers=bearer(fake.token("u-alice"))
        )
    assert response.status_code == 503
    assert "app's server" in response.json()["message"]


async def test_without_an_app_backend_a_writer_owns_their_own_projects(
    backend: tuple[FakeInkweldBackend, str],
) -> None:
    fake, _ = backend
    env = {"ATELIER_GATEWAY_INKWELD_APP_JWT_SECRETS": json.dumps([APP_KEY])}
    async with inkweld_gateway(InkweldWorld(profiles=[openai_profile()]), env=env) as ink:
        alice = bearer(fake.token("u-alice"))
        own = await ink.client.get(f"{API}/media/alice/anything", headers=alice)
        other = await ink.client.get(f"{API}/media/bob/anything", headers=alice)
        admin = await ink.client.get(f"{API}/admin/image-profiles", headers=alice)
    assert (own.status_code, other.status_code, admin.status_code) == (200, 404, 403)


def test_short_app_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 characters"):
        InkweldSettings(app_jwt_secrets=["short"])
