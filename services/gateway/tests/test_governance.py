"""Governance at the gateway: who may see and do what, quotas and rate limits before a job is
accepted, the profile cache, and tokens verified against a JWKS URL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from gateway_testkit import (
    World,
    auth,
    make_job,
    make_media,
    make_profile,
    make_token,
    running_gateway,
    test_settings,
)
from pydantic import ValidationError

from atelier_contracts.errors import Unavailable
from atelier_contracts.jobs import JobListQuery, JobRequested, JobStatus, JobView
from atelier_contracts.media import MediaListQuery, MediaListReply, MediaReply
from atelier_contracts.profiles import (
    GenerationSettings,
    ProfilesChanged,
    ProfilesListReply,
    QuotaReserveReply,
    QuotaReserveRequest,
)
from atelier_contracts.subjects import Subject
from atelier_gateway.auth import Authenticator, TokenRejected, User
from atelier_gateway.models import GenerationRequestBody
from atelier_gateway.service import GatewayService, QuotaRefused
from atelier_gateway.settings import Settings
from atelier_settings.base import LOCAL_ONLY_SECRET

VALID = {"project": "alpha", "profile_id": "sketch", "prompt": "A lighthouse in a storm"}
ALICE = auth(make_token("alice", ["alpha"]))
BOB = auth(make_token("bob", ["beta"]))


def error_of(response: Any) -> tuple[int, str]:
    body = response.json()
    assert body["error"]["message"], body
    return response.status_code, body["error"]["code"]


# --- authorization per route -----------------------------------------------------------------

ALICES = [
    ("GET", "/v1/generations/job-a"),
    ("GET", "/v1/generations/job-a/events"),
    ("POST", "/v1/generations/job-a/cancel"),
    ("GET", "/v1/projects/alpha/generations"),
    ("GET", "/v1/projects/alpha/generations/events"),
    ("GET", "/v1/projects/alpha/media"),
    ("GET", "/v1/media/media-a"),
    ("GET", "/v1/media/media-a/content"),
    ("GET", "/v1/media/media-a/thumbnail"),
]


def alices_world() -> World:
    world = World()
    world.jobs["job-a"] = make_job("job-a", "alpha", user_id="alice", status=JobStatus.GENERATING)
    world.media["media-a"] = make_media("media-a", "alpha")
    return world


@pytest.mark.parametrize(("method", "path"), ALICES)
async def test_another_user_gets_404_for_everything_of_alices(method: str, path: str) -> None:
    async with running_gateway(alices_world()) as gw:
        response = await gw.client.request(method, path, headers=BOB)
        assert error_of(response) == (404, "not_found")
        assert "alpha" not in response.text or path.startswith("/v1/projects/")
        # Alice herself can (streams are not read here; cancel needs dispatch, not faked here).
        if not path.endswith(("/events", "/cancel")):
            mine = await gw.client.request(method, path, headers=ALICE)
            assert mine.status_code == 200, (path, mine.text)


async def test_submitting_without_a_grant_is_403_and_reserves_nothing() -> None:
    async with running_gateway() as gw:
        for token in (make_token("bob", ["beta"]), make_token("carol", [])):
            response = await gw.client.post("/v1/generations", json=VALID, headers=auth(token))
            assert error_of(response) == (403, "project_not_granted")
        assert gw.world.published == [] and gw.world.reservations == []


async def test_the_switch_refuses_new_generations_before_any_credit_is_held() -> None:
    world = World(settings=GenerationSettings(enabled=False, reason="Maintenance."))
    async with running_gateway(world) as gw:
        for route in ("/v1/generations", "/v1/context/preview"):
            response = await gw.client.post(route, json=VALID, headers=ALICE)
            assert error_of(response) == (403, "generation_disabled"), route
            assert "Maintenance." in response.json()["error"]["message"]
        assert gw.world.reservations == [] and gw.world.published == []
        features = (await gw.client.get("/v1/features", headers=ALICE)).json()
        assert features["enabled"] is False and features["reason"] == "Maintenance."


# --- quotas and rate limits ------------------------------------------------------------------


async def test_an_accepted_job_holds_its_credits_first() -> None:
    async with running_gateway() as gw:
        response = await gw.client.post(
            "/v1/generations", json={**VALID, "count": 2}, headers=ALICE
        )
        assert response.status_code == 202, response.text
        (reservation,) = gw.world.reservations
        [published] = gw.world.published
        assert reservation == QuotaReserveRequest(
            job_id=response.json()["id"],
            user_id="alice",
            project="alpha",
            profile_id="sketch",
            count=2,
            # What the job weighs in the queues, counted against the user's in-flight budget.
            payload_bytes=len(published.model_dump_json()),
        )
        assert published.job_id == reservation.job_id


async def test_spent_quota_is_429_with_remaining_and_reset_time() -> None:
    world = World()
    resets = datetime(2026, 4, 1, tzinfo=UTC)
    world.quota_reply = QuotaReserveReply(
        outcome="quota_exceeded",
        message="This generation costs 4 credits, but only 1 of your 10 are left.",
        cost=4,
        limit=10,
        remaining=1,
        resets_at=resets,
    )
    async with running_gateway(world) as gw:
        response = await gw.client.post("/v1/generations", json=VALID, headers=ALICE)
        assert response.status_code == 429
        error = response.json()["error"]
        assert error["code"] == "quota_exceeded"
        assert error["message"].startswith("This generation costs 4 credits")
        assert (error["remaining"], error["limit"], error["cost"]) == (1, 10, 4)
        assert datetime.fromisoformat(error["resets_at"]) == resets
        assert int(response.headers["retry-after"]) >= 1
        assert gw.world.published == []


async def test_submitting_too_fast_is_429_with_retry_after() -> None:
    world = World()
    world.quota_reply = QuotaReserveReply(
        outcome="rate_limited", message="Too quickly.", retry_after_s=2.2
    )
    async with running_gateway(world) as gw:
        response = await gw.client.post("/v1/generations", json=VALID, headers=ALICE)
        assert error_of(response) == (429, "rate_limited")
        assert response.headers["retry-after"] == "3"
        assert response.json()["error"]["retry_after_s"] == 2.2
        assert gw.world.published == []


async def test_too_much_in_flight_is_429_naming_the_limit_and_the_size_is_sent() -> None:
    world = World()
    world.quota_reply = QuotaReserveReply(
        outcome="too_much_in_flight",
        message="Your generations queued or running already carry 95.0 MiB "
        "(ATELIER_PROFILES_USER_MAX_BYTES_IN_FLIGHT).",
        retry_after_s=5.0,
    )
    async with running_gateway(world) as gw:
        response = await gw.client.post("/v1/generations", json=VALID, headers=ALICE)
        assert error_of(response) == (429, "too_much_in_flight")
        assert "USER_MAX_BYTES_IN_FLIGHT" in response.json()["error"]["message"]
        assert response.headers["retry-after"] == "5"
        assert gw.world.published == []
        [reservation] = gw.world.reservations
        assert reservation.payload_bytes > len(VALID["prompt"])


class SubmitBackends:
    """Just enough of `Backends` for submitting."""

    def __init__(self) -> None:
        self.profile_calls = 0
        self.catalog = ProfilesListReply(
            settings=GenerationSettings(enabled=True), profiles=[make_profile()]
        )
        self.reserve_error: Exception | None = None
        self.publish_error: Exception | None = None
        self.published: list[JobRequested] = []
        self.released: list[str] = []

    async def profiles(self, *, include_disabled: bool) -> ProfilesListReply:
        self.profile_calls += 1
        return self.catalog

    async def reserve_quota(self, request: QuotaReserveRequest) -> QuotaReserveReply:
        if self.reserve_error is not None:
            raise self.reserve_error
        return QuotaReserveReply(outcome="reserved", message="ok")

    async def release_quota(self, job_id: str) -> bool:
        self.released.append(job_id)
        return True

    async def publish_job_requested(self, event: JobRequested) -> None:
        if self.publish_error is not None:
            raise self.publish_error
        self.published.append(event)

    async def job(self, job_id: str) -> JobView | None:
        return None

    async def jobs(self, query: JobListQuery) -> list[JobView]:
        return []

    async def media(self, media_id: str) -> MediaReply:
        return MediaReply(media=None)

    async def media_page(self, query: MediaListQuery) -> MediaListReply:
        return MediaListReply(items=[], total=0)

    async def cancel_job(self, job_id: str, user_id: str) -> JobView | None:
        return None

    async def subscribe_status(self, subject: str) -> Any:
        raise NotImplementedError


USER = User(id="alice", projects=frozenset({"alpha"}))


def service_with(backends: SubmitBackends, **kwargs: Any) -> GatewayService:
    return GatewayService(backends, job_lookup_grace_s=0, **kwargs)  # type: ignore[arg-type]


async def test_credits_of_a_job_that_could_not_be_queued_are_given_back() -> None:
    backends = SubmitBackends()
    backends.publish_error = Unavailable("The job queue is not answering; try again shortly.")
    service = service_with(backends)
    with pytest.raises(Unavailable):
        await service.submit(GenerationRequestBody(**VALID), USER, None)
    assert len(backends.released) == 1
    # With an Idempotency-Key the retry reuses the reservation: nothing is released.
    with pytest.raises(Unavailable):
        await service.submit(GenerationRequestBody(**VALID), USER, "key-1")
    assert len(backends.released) == 1


async def test_no_reservation_no_job() -> None:
    backends = SubmitBackends()
    backends.reserve_error = Unavailable("The profiles service is not answering.")
    with pytest.raises(Unavailable):
        await service_with(backends).submit(GenerationRequestBody(**VALID), USER, None)
    assert backends.published == []


async def test_a_refusal_carries_the_reply() -> None:
    reply = QuotaReserveReply(outcome="quota_exceeded", message="No credits left.", remaining=0)
    refused = QuotaRefused(reply)
    assert (refused.status_code, refused.code, refused.message) == (
        429,
        "quota_exceeded",
        "No credits left.",
    )


# --- the profile cache -----------------------------------------------------------------------


async def test_profiles_are_reused_for_at_most_the_cache_time() -> None:
    backends = SubmitBackends()
    now = [100.0]
    service = service_with(backends, profile_cache_s=1.0, clock=lambda: now[0])
    await service.features()
    await service.features()
    await service.submit(GenerationRequestBody(**VALID), USER, None)
    assert backends.profile_calls == 1
    now[0] += 1.0
    await service.features()
    assert backends.profile_calls == 2
    service.forget_profiles()
    await service.features()
    assert backends.profile_calls == 3


async def test_a_burst_asks_profiles_once() -> None:
    """Submissions arriving together as the cache expires share one question (a burst of 512
    once asked 512 times, and profiles, answering one at a time, timed out)."""
    backends = SubmitBackends()
    asked = asyncio.Event()
    release = asyncio.Event()
    answer = backends.profiles

    async def slow_profiles(*, include_disabled: bool) -> ProfilesListReply:
        asked.set()
        await release.wait()
        return await answer(include_disabled=include_disabled)

    backends.profiles = slow_profiles  # type: ignore[method-assign]
    service = service_with(backends, profile_cache_s=1.0)
    waiting = [asyncio.create_task(service.features()) for _ in range(50)]
    await asked.wait()
    release.set()
    await asyncio.gather(*waiting)
    assert backends.profile_calls == 1


async def test_profiles_changed_is_seen_at_once() -> None:
    world = World()
    async with running_gateway(world, settings=test_settings(profile_cache_s=1.0)) as gw:
        before = (await gw.client.get("/v1/features", headers=ALICE)).json()
        assert [p["id"] for p in before["profiles"]] == ["sketch"]
        world.profiles.append(make_profile(id="paint", name="Paint"))
        cached = (await gw.client.get("/v1/features", headers=ALICE)).json()
        assert [p["id"] for p in cached["profiles"]] == ["sketch"]  # within the second
        # On a real server the gateway's core subscription hears the JetStream publish too.
        await gw.broker.publish(
            ProfilesChanged(action="created", profile_id="paint"), Subject.PROFILES_CHANGED
        )
        after = (await gw.client.get("/v1/features", headers=ALICE)).json()
        assert [p["id"] for p in after["profiles"]] == ["paint", "sketch"]


# --- tokens from an identity provider (JWKS) -------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url(rsa_key: rsa.RSAPrivateKey) -> Iterator[str]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    body = json.dumps({"keys": [{**public, "kid": "key-1", "use": "sig", "alg": "RS256"}]})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


def rs256_token(key: rsa.RSAPrivateKey, kid: str = "key-1", **claims: Any) -> str:
    payload = {
        "sub": "idp-user",
        "projects": ["alpha"],
        "iss": "atelier",
        "exp": int(time.time()) + 600,
        **claims,
    }
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


async def test_jwks_tokens_are_accepted_and_confusion_is_not(
    rsa_key: rsa.RSAPrivateKey, jwks_url: str
) -> None:
    async with running_gateway(settings=test_settings(jwks_url=jwks_url)) as gw:
        ok = await gw.client.get("/v1/features", headers=auth(rs256_token(rsa_key)))
        assert ok.status_code == 200, ok.text
        submitted = await gw.client.post(
            "/v1/generations", json=VALID, headers=auth(rs256_token(rsa_key))
        )
        assert submitted.status_code == 202
        assert gw.world.published[0].user_id == "idp-user"

        # The shared secret still works here (it is set), and a token naming a kid the JWKS
        # does not have, or signed by another key, does not.
        assert (await gw.client.get("/v1/features", headers=ALICE)).status_code == 200
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for token in (rs256_token(rsa_key, kid="nope"), rs256_token(other)):
            refused = await gw.client.get("/v1/features", headers=auth(token))
            assert error_of(refused) == (401, "unauthorized")

        # HMAC "signed" with the public key as the secret: the classic RS/HS confusion.
        pem = rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        claims = {"sub": "x", "projects": ["alpha"], "iss": "atelier", "exp": 4_102_444_800}
        signing_input = b".".join(
            base64url(json.dumps(part).encode())
            for part in ({"alg": "HS256", "typ": "JWT", "kid": "key-1"}, claims)
        )
        signature = base64url(hmac.new(pem, signing_input, hashlib.sha256).digest())
        forged = (signing_input + b"." + signature).decode()
        assert (await gw.client.get("/v1/features", headers=auth(forged))).status_code == 401


def base64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


async def test_an_unreachable_jwks_is_503_not_401(rsa_key: rsa.RSAPrivateKey) -> None:
    settings = test_settings(jwks_url="http://127.0.0.1:9/jwks.json")
    async with running_gateway(settings=settings) as gw:
        response = await gw.client.get("/v1/features", headers=auth(rs256_token(rsa_key)))
        assert error_of(response) == (503, "unavailable")


async def test_with_jwks_only_hs256_is_off_outside_local(
    rsa_key: rsa.RSAPrivateKey, jwks_url: str
) -> None:
    job_ids = "job-id-secret-0123456789abcdef0123"
    settings = Settings(
        environment="production", jwks_url=jwks_url, job_id_secret=job_ids, run_startup_hooks=False
    )
    assert settings.jwt_secret == LOCAL_ONLY_SECRET and not settings.hs256_enabled
    async with running_gateway(settings=settings) as gw:
        with warnings.catch_warnings():  # the local default is short: that is the point
            warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
            default_signed = make_token("mallory", ["alpha"], secret=LOCAL_ONLY_SECRET)
        refused = await gw.client.get("/v1/features", headers=auth(default_signed))
        assert error_of(refused) == (401, "unauthorized")
        accepted = await gw.client.get("/v1/features", headers=auth(rs256_token(rsa_key)))
        assert accepted.status_code == 200

    with pytest.raises(ValidationError, match="jwt_secret"):
        Settings(environment="production")  # neither a secret nor a JWKS URL
    with pytest.raises(ValidationError, match="job_id_secret"):
        # Job ids need a secret of their own when the JWT secret is left at its default.
        Settings(environment="production", jwks_url=jwks_url)
    with pytest.raises(ValidationError, match="32 bytes"):
        Settings(environment="production", jwks_url=jwks_url, jwt_secret="short")


async def test_missing_token_message_is_unchanged_with_the_authenticator() -> None:
    with pytest.raises(TokenRejected, match="Authorization: Bearer"):
        await Authenticator(secret="s" * 32, issuer="atelier")(None)
