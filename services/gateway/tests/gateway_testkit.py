"""Fakes of the services the gateway asks, answering on FastStream's in-memory broker.

Imported by the tests as `gateway_testkit` (pytest runs with `--import-mode=importlib`, where test
modules cannot import each other; `conftest.py` puts this directory on `sys.path`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
from fastapi import FastAPI
from faststream.nats import NatsBroker, TestNatsBroker

from atelier_contracts.jobs import (
    JobListQuery,
    JobListReply,
    JobQuery,
    JobReply,
    JobRequested,
    JobStatus,
    JobView,
)
from atelier_contracts.media import (
    MediaItem,
    MediaListQuery,
    MediaListReply,
    MediaQuery,
    MediaReply,
)
from atelier_contracts.profiles import (
    GenerationSettings,
    OptionSpec,
    Profile,
    ProfilesListQuery,
    ProfilesListReply,
    QuotaReleaseReply,
    QuotaReleaseRequest,
    QuotaReserveBatch,
    QuotaReserveBatchReply,
    QuotaReserveReply,
    QuotaReserveRequest,
)
from atelier_contracts.staging import (
    InputSlot,
    InputSlotsReply,
    InputSlotsRequest,
)
from atelier_contracts.subjects import JOBS_STREAM, Subject
from atelier_contracts.testing import job_view, media_item
from atelier_gateway.main import create_app
from atelier_gateway.settings import Settings

SECRET = "gateway-test-secret-0123456789abcdef"
NOW = datetime(2025, 1, 1, tzinfo=UTC)
ALL_SERVICES = frozenset({"profiles", "dispatch", "media", "context"})


def make_profile(**overrides: Any) -> Profile:
    fields: dict[str, Any] = {
        "id": "sketch",
        "name": "Sketch",
        "provider": "offline",
        "model": "offline-sketch",
        "sizes": ["1024x1024", "512x512"],
        "default_size": "1024x1024",
        "counts": [1, 2, 4],
        "options": [
            OptionSpec(name="quality", values=["low", "medium", "high"], default="medium"),
            OptionSpec(name="seed", kind="integer", minimum=0, maximum=2**31 - 1),
            OptionSpec(name="negative_prompt", kind="string", max_length=50),
            OptionSpec(name="guidance", kind="number", minimum=0, maximum=20, default=7.5),
            OptionSpec(name="transparent", kind="boolean", default=False),
        ],
        "max_reference_images": 2,
        "prompt_max_length": 100,
        "created_at": NOW,
        "updated_at": NOW,
    }
    fields.update(overrides)
    return Profile(**fields)


def make_job(job_id: str, project: str = "alpha", **overrides: Any) -> JobView:
    return job_view(id=job_id, project=project, **overrides)


def make_media(media_id: str, project: str = "alpha", **overrides: Any) -> MediaItem:
    return media_item(id=media_id, project=project, **overrides)


def make_token(
    sub: str = "alice",
    projects: Iterable[str] = ("alpha",),
    *,
    secret: str = SECRET,
    expires_in: float = 3600,
    **claims: Any,
) -> str:
    payload: dict[str, Any] = {
        "sub": sub,
        "projects": list(projects),
        "iss": "atelier",
        "exp": int(time.time() + expires_in),
    }
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


def auth(token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or make_token()}"}


def test_settings(**overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "run_startup_hooks": False,
        "jwt_secret": SECRET,
        "job_lookup_grace_s": 0.2,
        "query_timeout_s": 0.5,
        # Tests change the fake profiles between requests; caching is tested on its own.
        "profile_cache_s": 0.0,
    }
    fields.update(overrides)
    return Settings(**fields)


test_settings.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


@dataclass
class World:
    """What the fake profiles, dispatch and media services know."""

    settings: GenerationSettings = field(default_factory=lambda: GenerationSettings(enabled=True))
    profiles: list[Profile] = field(default_factory=lambda: [make_profile()])
    jobs: dict[str, JobView] = field(default_factory=dict)
    media: dict[str, MediaItem] = field(default_factory=dict)
    published: list[JobRequested] = field(default_factory=list)
    # Like dispatch: record every requested job, so a later JOBS_GET finds it.
    record_requested_jobs: bool = True
    job_queries: int = 0
    # The fake quota: what `profiles.query.quota_reserve` answers (reserved, by default).
    quota_reply: QuotaReserveReply = field(
        default_factory=lambda: QuotaReserveReply(outcome="reserved", message="Credits reserved.")
    )
    reservations: list[QuotaReserveRequest] = field(default_factory=list)
    releases: list[str] = field(default_factory=list)
    held: set[str] = field(default_factory=set)  # job ids holding a reservation

    def reserve(self, request: QuotaReserveRequest) -> QuotaReserveReply:
        """As profiles answers: a job id that holds a reservation says so (a keyed retry)."""
        if request.job_id in self.held:
            return QuotaReserveReply(outcome="reserved", message="Credits reserved.", repeated=True)
        if self.quota_reply.outcome == "reserved":
            self.held.add(request.job_id)
        return self.quota_reply

    # The fake context's slots asked for, and what was PUT to the staging bucket, by key.
    slot_requests: list[InputSlotsRequest] = field(default_factory=list)
    staged: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    staging_status: int = 200  # what the staging store answers a PUT


def register_fakes(
    broker: NatsBroker, world: World, services: Iterable[str], *, capture: bool = True
) -> None:
    """Fake responders; `capture` also records `jobs.requested` (in-memory broker only: on a
    real server the test reads the stream instead)."""
    services = set(services)
    if "profiles" in services:

        @broker.subscriber(Subject.PROFILES_LIST, queue="profiles")
        async def list_profiles(query: ProfilesListQuery) -> ProfilesListReply:
            profiles = [p for p in world.profiles if query.include_disabled or p.enabled]
            return ProfilesListReply(settings=world.settings, profiles=profiles)

        @broker.subscriber(Subject.QUOTA_RESERVE, queue="profiles")
        async def reserve_quota(batch: QuotaReserveBatch) -> QuotaReserveBatchReply:
            world.reservations.extend(batch.requests)
            return QuotaReserveBatchReply(replies=[world.reserve(r) for r in batch.requests])

        @broker.subscriber(Subject.QUOTA_RELEASE, queue="profiles")
        async def release_quota(request: QuotaReleaseRequest) -> QuotaReleaseReply:
            world.releases.append(request.job_id)
            world.held.discard(request.job_id)
            return QuotaReleaseReply(released=True)

    if "dispatch" in services:

        @broker.subscriber(Subject.JOBS_GET, queue="dispatch")
        async def get_job(query: JobQuery) -> JobReply:
            world.job_queries += 1
            return JobReply(job=world.jobs.get(query.job_id))

        @broker.subscriber(Subject.JOBS_LIST, queue="dispatch")
        async def list_jobs(query: JobListQuery) -> JobListReply:
            jobs = [
                j
                for j in world.jobs.values()
                if j.project == query.project
                and (not query.active_only or j.status in {JobStatus.QUEUED, JobStatus.GENERATING})
            ]
            return JobListReply(jobs=jobs)

    if "media" in services:

        @broker.subscriber(Subject.MEDIA_GET, queue="media")
        async def get_media(query: MediaQuery) -> MediaReply:
            item = world.media.get(query.media_id)
            if item is None:
                return MediaReply(media=None)
            return MediaReply(
                media=item,
                content_url=f"http://s3.test/media/{item.original_key}?sig=1",
                thumbnail_url=f"http://s3.test/media/{item.thumbnail_key}?sig=1",
            )

        @broker.subscriber(Subject.MEDIA_LIST, queue="media")
        async def list_media(query: MediaListQuery) -> MediaListReply:
            items = [m for m in world.media.values() if m.project == query.project]
            return MediaListReply(
                items=items[query.offset : query.offset + query.limit], total=len(items)
            )

    if "context" in services:

        @broker.subscriber(Subject.CONTEXT_INPUT_SLOTS, queue="context")
        async def input_slots(request: InputSlotsRequest) -> InputSlotsReply:
            world.slot_requests.append(request)
            prefix = f"refs/{request.job_id}/in/" if request.job_id else f"previews/{'a' * 32}/in/"
            keys = [f"{prefix}{n}" for n in range(request.count)]
            slots = [InputSlot(key=k, put_url=f"{STAGING_URL}/{k}?sig=1") for k in keys]
            return InputSlotsReply(slots=slots, expires_s=300)

    if not capture:
        return

    @broker.subscriber(Subject.JOBS_REQUESTED, stream=JOBS_STREAM.name)
    async def capture_requested(event: JobRequested) -> None:
        world.published.append(event)
        if world.record_requested_jobs:
            world.jobs.setdefault(
                event.job_id,
                make_job(
                    event.job_id,
                    event.project,
                    user_id=event.user_id,
                    prompt=event.prompt,
                    size=event.size,
                    count=event.count,
                    profile_id=event.profile.id,
                    target=event.target,
                    options=event.options,
                    request_digest=event.request_digest,
                ),
            )


STAGING_URL = "http://s3.test/staging"


def storage_app(request: httpx.Request, world: World | None = None) -> httpx.Response:
    """Object storage behind the presigned URLs; PUTs to the staging bucket land in `world`."""
    if request.url.host != "s3.test":
        return httpx.Response(500)
    if request.method == "PUT" and world is not None:
        if world.staging_status != 200:
            return httpx.Response(world.staging_status)
        key = request.url.path.removeprefix("/staging/")
        world.staged[key] = (request.read(), request.headers["content-type"])
        return httpx.Response(200)
    if "missing" in request.url.path:
        return httpx.Response(404)
    if request.url.path.endswith(".webp"):
        return httpx.Response(200, content=b"RIFFwebp", headers={"content-type": "image/webp"})
    return httpx.Response(200, content=b"\x89PNGdata", headers={"content-type": "image/png"})


@dataclass
class Harness:
    client: httpx.AsyncClient
    world: World
    broker: NatsBroker
    app: FastAPI


@asynccontextmanager
async def running_gateway(
    world: World | None = None,
    *,
    services: Iterable[str] = ALL_SERVICES,
    settings: Settings | None = None,
) -> AsyncIterator[Harness]:
    world = world or World()
    transport = httpx.MockTransport(lambda request: storage_app(request, world))
    app = create_app(settings or test_settings(), media_transport=transport)
    broker: NatsBroker = app.state.broker
    register_fakes(broker, world, services)
    async with (
        TestNatsBroker(broker),
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        yield Harness(client, world, broker, app)
