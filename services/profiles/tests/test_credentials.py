"""Provider credentials: encrypted at rest, masked in every read, sealed on NATS, never logged;
and the admin API refuses anything but the admin token."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import ValidationError

from atelier_contracts.profiles import CredentialQuery, CredentialReply
from atelier_contracts.subjects import Subject
from atelier_messaging import query
from atelier_profiles.governance import GovernanceService
from atelier_profiles.settings import Settings
from atelier_security import SealBroken, at_rest_sealer, mask, transport_sealer
from atelier_settings.base import LOCAL_ONLY_SECRET

from .conftest import ADMIN_TOKEN, RunningApp

KEY = "sk-proj-TopSecretKey-0123456789abcdefXYZ"
ROTATED = "sk-proj-RotatedKey-9876543210fedcbaQRS"

# The same answer is checked by services/workers/tests/test_credentials.py: both sides of the
# transport must agree on the format.
KNOWN_ANSWER = {
    "secret": "known-answer-transport-secret",
    "provider": "openai",
    "plaintext": "sk-known-answer-0123456789abcdef",
    "nonce": bytes(range(12)),
    "sealed": "v1.AAECAwQFBgcICQoLGlyQDGvfG0iY0TlgrJ1r798Dj1HnTlJcvc3ATEBz6OAizlRvfYHoN8ZWOQPcLivO",
}


def database_file(app: RunningApp) -> Path:
    settings: Settings = app.client._transport.app.state.settings  # type: ignore[attr-defined]
    return Path(settings.database_url.split("///", 1)[1])


def test_transport_format_known_answer() -> None:
    sealer = transport_sealer(KNOWN_ANSWER["secret"])  # type: ignore[arg-type]
    sealed = sealer.seal(
        "openai",
        KNOWN_ANSWER["plaintext"],  # type: ignore[arg-type]
        nonce=KNOWN_ANSWER["nonce"],  # type: ignore[arg-type]
    )
    assert sealed == KNOWN_ANSWER["sealed"]
    assert sealer.open("openai", sealed) == KNOWN_ANSWER["plaintext"]


def test_a_sealed_key_opens_only_for_its_provider_and_key() -> None:
    sealed = at_rest_sealer("one secret").seal("openai", KEY)
    assert KEY not in sealed
    with pytest.raises(SealBroken):
        at_rest_sealer("one secret").open("offline", sealed)
    with pytest.raises(SealBroken):
        at_rest_sealer("another secret").open("openai", sealed)
    with pytest.raises(SealBroken):
        transport_sealer("one secret").open("openai", sealed)  # at-rest and transport differ
    assert mask(KEY) == "••••fXYZ" and mask("short-key") == "••••"


def test_outside_local_the_default_keys_refuse_to_start() -> None:
    strong = "s" * 40
    with pytest.raises(ValidationError, match="credentials_key"):
        Settings(environment="production", admin_token=strong, credentials_transport_key=strong)
    with pytest.raises(ValidationError, match="credentials_transport_key"):
        Settings(environment="production", admin_token=strong, credentials_key=strong)
    ok = Settings(
        environment="production",
        admin_token=strong,
        credentials_key="at-rest-" + strong,
        credentials_transport_key="transport-" + strong,
    )
    assert "at-rest-" not in repr(ok) and "transport-" not in repr(ok)


async def test_set_list_rotate_delete_and_never_show_the_key(
    running_app: RunningApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = running_app.client
    seen: list[str] = []

    put = await client.put("/admin/v1/providers/openai/credentials", json={"api_key": KEY})
    assert put.status_code == 200, put.text
    seen.append(put.text)
    assert put.json()["credential_set"] is True
    assert put.json()["credential_masked"] == "••••fXYZ"

    listed = await client.get("/admin/v1/providers")
    seen.append(listed.text)
    by_name = {p["name"]: p for p in listed.json()}
    assert by_name["openai"]["credential_set"] is True
    assert by_name["offline"]["credential_set"] is False
    one = await client.get("/admin/v1/providers/openai")
    seen.append(one.text)

    rotated = await client.put("/admin/v1/providers/openai/credentials", json={"api_key": ROTATED})
    seen.append(rotated.text)
    assert rotated.json()["credential_masked"] == "••••aQRS"

    # At rest: the raw row holds neither key, only a sealed value.
    with sqlite3.connect(database_file(running_app)) as db:
        rows = db.execute("SELECT * FROM profiles_provider_credential").fetchall()
    assert len(rows) == 1
    raw = repr(rows)
    assert KEY not in raw and ROTATED not in raw and KEY[-12:] not in raw
    assert "v1." in raw

    # On NATS: the reply holds the key sealed for the transport; the worker's side opens it.
    response = await running_app.broker.request(
        CredentialQuery(provider="openai"), Subject.PROFILES_CREDENTIALS, timeout=10
    )
    assert ROTATED.encode() not in response.body
    reply = CredentialReply.model_validate_json(response.body)
    assert reply.configured and reply.sealed_key
    assert transport_sealer(LOCAL_ONLY_SECRET).open("openai", reply.sealed_key) == ROTATED

    deleted = await client.delete("/admin/v1/providers/openai/credentials")
    assert deleted.status_code == 204
    again = await client.delete("/admin/v1/providers/openai/credentials")
    assert again.status_code == 404
    none = await query(
        running_app.broker,
        Subject.PROFILES_CREDENTIALS,
        CredentialQuery(provider="openai"),
        CredentialReply,
        timeout=10,
    )
    assert none == CredentialReply(provider="openai", configured=False)

    # Workers were told each time, by name only.
    changes = [(c.action, c.provider) for c in running_app.changes]
    assert changes == [("credentials", "openai")] * 3
    everything = " ".join([*seen, caplog.text, *(c.model_dump_json() for c in running_app.changes)])
    assert KEY not in everything and ROTATED not in everything


async def test_bad_credential_input_is_refused_without_echoing_it(running_app: RunningApp) -> None:
    client = running_app.client
    unknown = await client.put("/admin/v1/providers/nobody/credentials", json={"api_key": KEY})
    assert unknown.status_code == 404 and KEY not in unknown.text
    spaced = await client.put(
        "/admin/v1/providers/openai/credentials", json={"api_key": f"{KEY} \n"}
    )
    assert spaced.status_code == 422 and KEY not in spaced.text
    bad_name = await client.put("/admin/v1/providers/Not%20A%20Name/credentials", json={})
    assert bad_name.status_code == 422


async def test_a_key_stored_under_another_at_rest_key_is_not_handed_out(
    running_app: RunningApp, caplog: pytest.LogCaptureFixture
) -> None:
    await running_app.client.put("/admin/v1/providers/openai/credentials", json={"api_key": KEY})
    governance: GovernanceService = running_app.client._transport.app.state.governance  # type: ignore[attr-defined]
    governance._at_rest = at_rest_sealer("a different at-rest secret")
    reply = await governance.sealed_credential("openai")
    assert reply == CredentialReply(provider="openai", configured=False)
    assert "does not open" in caplog.text and KEY not in caplog.text


def _admin_routes(openapi: dict[str, Any]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for path, operations in openapi["paths"].items():
        if not path.startswith("/admin/v1"):
            continue
        concrete = path.replace("{profile_id}", "p1").replace("{name}", "openai")
        concrete = concrete.replace("{user_id}", "alice")
        found.extend((method.upper(), concrete) for method in operations)
    return found


async def test_admin_routes_refuse_user_tokens_and_no_token(running_app: RunningApp) -> None:
    app = running_app.client._transport.app  # type: ignore[attr-defined]
    routes = _admin_routes(app.openapi())
    assert ("PUT", "/admin/v1/providers/openai/credentials") in routes
    assert ("GET", "/admin/v1/audits/summary") in routes
    user_token = jwt.encode(
        {"sub": "alice", "projects": ["alpha"], "iss": "atelier", "exp": int(time.time()) + 60},
        "gateway-secret-0123456789abcdef0123",
        algorithm="HS256",
    )
    for token in (user_token, ADMIN_TOKEN + "x", ""):
        for method, path in routes:
            response = await running_app.client.request(
                method, path, headers={"Authorization": f"Bearer {token}"}, json={}
            )
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
