"""The admin API over HTTP, with the broker replaced by FastStream's in-memory TestNatsBroker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from atelier_contracts.profiles import Profile
from atelier_profiles.main import create_app
from atelier_profiles.settings import Settings
from atelier_web.dependencies import threaded_calls

from .conftest import RunningApp, profile_fields


def _body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = profile_fields(**overrides).model_dump(mode="json")
    return body


def _assert_error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return str(error["message"])


ROUTES = [
    ("GET", "/admin/v1/settings"),
    ("PUT", "/admin/v1/settings"),
    ("GET", "/admin/v1/profiles"),
    ("POST", "/admin/v1/profiles"),
    ("GET", "/admin/v1/profiles/x"),
    ("PUT", "/admin/v1/profiles/x"),
    ("PATCH", "/admin/v1/profiles/x"),
    ("DELETE", "/admin/v1/profiles/x"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Basic dGVzdC1hZG1pbi10b2tlbg==", "Bearer ", "test-admin-token"],
)
async def test_every_route_needs_the_admin_token(
    running_app: RunningApp, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    client = running_app.client
    request = client.build_request(method, path, json={}, headers=headers)
    if authorization is None:
        del request.headers["Authorization"]
    response = await client.send(request)
    message = _assert_error(response, 401, "unauthorized")
    assert "test-admin-token" not in message


async def test_missing_and_wrong_tokens_get_the_same_answer(running_app: RunningApp) -> None:
    client = running_app.client
    missing = client.build_request("GET", "/admin/v1/profiles")
    del missing.headers["Authorization"]
    wrong = client.build_request(
        "GET", "/admin/v1/profiles", headers={"Authorization": "Bearer nope"}
    )
    assert (await client.send(missing)).json() == (await client.send(wrong)).json()


async def test_health_probes_need_no_token(running_app: RunningApp) -> None:
    client = running_app.client
    assert (await client.get("/healthz", headers={"Authorization": ""})).status_code == 200
    ready = await client.get("/readyz", headers={"Authorization": ""})
    assert ready.status_code == 200
    assert ready.json() == {"ready": True}


async def test_crud_round_trip(running_app: RunningApp) -> None:
    client = running_app.client

    created = await client.post("/admin/v1/profiles", json=_body())
    assert created.status_code == 201, created.text
    profile = Profile.model_validate(created.json())
    assert created.headers["location"] == f"/admin/v1/profiles/{profile.id}"
    assert profile.sizes == ["1024x1024", "512x512"]

    got = await client.get(f"/admin/v1/profiles/{profile.id}")
    assert got.status_code == 200
    assert Profile.model_validate(got.json()) == profile

    listed = await client.get("/admin/v1/profiles")
    assert [p["id"] for p in listed.json()] == [profile.id]

    replaced = await client.put(
        f"/admin/v1/profiles/{profile.id}",
        json=_body(name="Replaced", sizes=["512x512"], default_size="512x512"),
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["name"] == "Replaced"
    assert replaced.json()["sizes"] == ["512x512"]

    patched = await client.patch(f"/admin/v1/profiles/{profile.id}", json={"enabled": False})
    assert patched.status_code == 200, patched.text
    assert patched.json()["enabled"] is False
    assert patched.json()["name"] == "Replaced"

    enabled_only = await client.get("/admin/v1/profiles", params={"include_disabled": "false"})
    assert enabled_only.json() == []
    assert len((await client.get("/admin/v1/profiles")).json()) == 1

    deleted = await client.delete(f"/admin/v1/profiles/{profile.id}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    _assert_error(await client.get(f"/admin/v1/profiles/{profile.id}"), 404, "not_found")

    assert [(c.action, c.profile_id) for c in running_app.changes] == [
        ("created", profile.id),
        ("updated", profile.id),
        ("updated", profile.id),
        ("deleted", profile.id),
    ]


async def test_create_publishes_profiles_changed_after_the_commit(
    running_app: RunningApp,
) -> None:
    response = await running_app.client.post("/admin/v1/profiles", json=_body())
    assert response.status_code == 201
    [change] = running_app.changes
    assert change.type == "profiles.changed"
    assert (change.action, change.profile_id) == ("created", response.json()["id"])
    # The subscriber looked the profile up when the event arrived: it was already committed.
    assert running_app.visible_at_publish == [True]


async def test_settings_round_trip(running_app: RunningApp) -> None:
    client = running_app.client
    assert (await client.get("/admin/v1/settings")).json() == {"enabled": True, "reason": None}
    off = {"enabled": False, "reason": "Paused for maintenance."}
    put = await client.put("/admin/v1/settings", json=off)
    assert put.status_code == 200
    assert put.json() == off
    assert (await client.get("/admin/v1/settings")).json() == off
    assert [c.action for c in running_app.changes] == ["settings"]


async def test_type_errors_have_the_error_shape(running_app: RunningApp) -> None:
    response = await running_app.client.post(
        "/admin/v1/profiles", json={"name": "x", "provider": "Not Valid!", "sizes": []}
    )
    message = _assert_error(response, 422, "invalid_input")
    assert "provider" in message
    assert "sizes" in message
    assert "model" in message


async def test_rule_errors_have_the_error_shape(running_app: RunningApp) -> None:
    response = await running_app.client.post(
        "/admin/v1/profiles", json=_body(default_size="256x256")
    )
    message = _assert_error(response, 422, "invalid_input")
    assert "default_size: '256x256' is not one of sizes" in message
    assert running_app.changes == []


async def test_malformed_json_is_400(running_app: RunningApp) -> None:
    response = await running_app.client.post(
        "/admin/v1/profiles", content=b"{", headers={"Content-Type": "application/json"}
    )
    _assert_error(response, 400, "malformed_json")


async def test_invalid_patch_is_422(running_app: RunningApp) -> None:
    client = running_app.client
    profile_id = (await client.post("/admin/v1/profiles", json=_body())).json()["id"]
    response = await client.patch(f"/admin/v1/profiles/{profile_id}", json={"counts": [3]})
    assert "counts: 3 images" in _assert_error(response, 422, "invalid_input")
    response = await client.patch(f"/admin/v1/profiles/{profile_id}", json={"name": None})
    assert "name:" in _assert_error(response, 422, "invalid_input")


async def test_unknown_id_is_404_everywhere(running_app: RunningApp) -> None:
    client = running_app.client
    for response in (
        await client.get("/admin/v1/profiles/missing"),
        await client.put("/admin/v1/profiles/missing", json=_body()),
        await client.patch("/admin/v1/profiles/missing", json={"enabled": False}),
        await client.delete("/admin/v1/profiles/missing"),
    ):
        assert "missing" in _assert_error(response, 404, "not_found")


async def test_duplicate_name_is_409(running_app: RunningApp) -> None:
    client = running_app.client
    assert (await client.post("/admin/v1/profiles", json=_body(name="Sketch"))).status_code == 201
    response = await client.post("/admin/v1/profiles", json=_body(name="SKETCH"))
    assert "already exists" in _assert_error(response, 409, "conflict")


async def test_openapi_documents_the_admin_api(running_app: RunningApp) -> None:
    spec = (await running_app.client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths) >= {
        "/admin/v1/settings",
        "/admin/v1/profiles",
        "/admin/v1/profiles/{profile_id}",
    }
    create = paths["/admin/v1/profiles"]["post"]
    assert create["summary"] == "Create a model profile"
    assert {"201", "401", "409", "422"} <= set(create["responses"])
    assert create["security"] == [{"AdminToken": []}]
    fields = spec["components"]["schemas"]["ProfileFields"]["properties"]
    assert fields["name"]["examples"] == ["Sketch (offline)"]


def test_every_route_runs_on_the_event_loop(tmp_path: Path) -> None:
    # A plain `def` dependency (or a class given to Depends()) costs a thread hop per request.
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'profiles.db'}",
        admin_token="t" * 32,
        declare_streams=False,
    )
    assert threaded_calls(create_app(settings)) == []
