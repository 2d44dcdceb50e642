"""Fakes for the Inkweld facade's tests: gateway_testkit's world, plus the profiles admin
commands, the audit, media assignments, and a dispatch that finishes jobs at once.

Imported by the tests as `inkweld_testkit` (see gateway_testkit's docstring for why).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from unittest import mock

import httpx
import jsonschema
from fastapi import FastAPI
from faststream.nats import NatsBroker, TestNatsBroker
from gateway_testkit import (
    ALL_SERVICES,
    NOW,
    World,
    make_job,
    make_media,
    make_profile,
    make_token,
    register_fakes,
    storage_app,
    test_settings,
)

from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.jobs import JobImage, JobProgress, JobRequested, JobStatus
from atelier_contracts.media import (
    MarkDeliveredCommand,
    MarkDeliveredReply,
    MediaAssigned,
    MediaItem,
    ProjectAssignmentsQuery,
    ProjectAssignmentsReply,
    ProjectFile,
    ProjectFileQuery,
    ProjectFileReply,
    ProjectFilesQuery,
    ProjectFilesReply,
    StoreFileCommand,
    StoreFileReply,
    UploadSlotReply,
    UploadSlotRequest,
)
from atelier_contracts.profiles import (
    AuditFilterQuery,
    AuditListQuery,
    AuditPageReply,
    AuditProfileTally,
    AuditRecord,
    AuditSummaryReply,
    AuditTally,
    AuditUserTally,
    Profile,
    ProfileCommandReply,
    ProfileCreateCommand,
    ProfileDeleteCommand,
    ProfileQuery,
    ProfileReplaceCommand,
    ProfileReply,
    RemoteError,
)
from atelier_contracts.subjects import JOBS_STREAM, MEDIA_STREAM, Subject
from atelier_gateway.main import create_app
from atelier_gateway.streams import StatusUpdate

SPEC_PATH = Path(__file__).parents[1] / "src/atelier_gateway/inkweld/openapi.json"
ADMIN_TOKEN = make_token("root", ["alpha"], roles=["admin"])
USER_TOKEN = make_token("alice", ["alpha"])
JobOutcome = Literal["complete", "fail", "pending"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def openai_profile(**overrides: Any) -> Profile:
    fields: dict[str, Any] = {
        "id": "9b1c55f2-6a1e-4d7e-9a0c-3d1b6c2f0e11",
        "name": "DALL-E 3",
        "provider": "openai",
        "model": "dall-e-3",
        "sizes": ["1024x1024", "1792x1024", "1024x1792"],
        "default_size": "1024x1024",
        "counts": [1, 2],
        "options": [
            {"name": "quality", "kind": "enum", "values": ["standard", "hd"]},
            {"name": "style", "kind": "enum", "values": ["vivid", "natural"]},
        ],
        "max_reference_images": 0,
        "prompt_max_length": 4000,
        "sort_order": 1,
        "credit_cost": 2,
        "provider_config": {"inkweld": {"description": "Crisp", "usesAspectRatioOnly": False}},
    }
    fields.update(overrides)
    return make_profile(**fields)


def audit_record(job_id: str, **overrides: Any) -> AuditRecord:
    fields: dict[str, Any] = {
        "job_id": job_id,
        "user_id": "alice",
        "project": "alpha",
        "profile_id": openai_profile().id,
        "profile_name": "DALL-E 3",
        "provider": "openai",
        "model": "dall-e-3",
        "status": "completed",
        "moderated": False,
        "prompt": "A lighthouse, as sent",
        "user_prompt": "A lighthouse",
        "requested": 1,
        "landed": 1,
        "failed": 0,
        "cost": 2.0,
        "created_at": NOW,
        "finished_at": NOW,
    }
    fields.update(overrides)
    return AuditRecord.model_validate(fields)


@dataclass
class InkweldWorld(World):
    """What the fake services know, beyond gateway_testkit's `World`."""

    outcome: JobOutcome = "complete"
    failure: ErrorInfo = field(default_factory=lambda: ErrorInfo.of(ErrorClass.CONTENT_BLOCKED))
    audits: list[AuditRecord] = field(default_factory=list)
    audit_queries: list[AuditListQuery] = field(default_factory=list)
    commands: list[Any] = field(default_factory=list)
    cover: MediaItem | None = None
    element_images: dict[str, MediaItem] = field(default_factory=dict)
    assigned: list[MediaAssigned] = field(default_factory=list)
    # Project files by (project, name), and the bytes behind the presigned URLs, by URL path.
    files: dict[tuple[str, str], ProjectFile] = field(default_factory=dict)
    objects: dict[str, bytes] = field(default_factory=dict)
    delivered: list[str] = field(default_factory=list)


def _finish(world: InkweldWorld, event: JobRequested) -> None:
    job = make_job(
        event.job_id,
        event.project,
        user_id=event.user_id,
        profile=event.profile,
        prompt=event.prompt,
        size=event.size,
        count=event.count,
        options=event.options,
    )
    if world.outcome == "complete":
        images = []
        for index in range(event.count):
            media_id = f"{event.job_id}-{index}"
            world.media[media_id] = make_media(
                media_id, event.project, job_id=event.job_id, index=index, sha256=f"{index:064x}"
            )
            images.append(
                JobImage(
                    media_id=media_id, index=index, width=64, height=64, content_type="image/png"
                )
            )
        job = job.model_copy(
            update={
                "status": JobStatus.COMPLETED,
                "images": images,
                "progress": JobProgress(total=event.count, landed=event.count),
            }
        )
    elif world.outcome == "fail":
        job = job.model_copy(
            update={
                "status": JobStatus.FAILED,
                "error": world.failure,
                "progress": JobProgress(total=event.count, failed=event.count),
            }
        )
    world.jobs[event.job_id] = job


def register_inkweld_fakes(broker: NatsBroker, world: InkweldWorld) -> None:
    register_fakes(broker, world, ALL_SERVICES, capture=False)

    @broker.subscriber(Subject.JOBS_REQUESTED, stream=JOBS_STREAM.name)
    async def dispatch(event: JobRequested) -> None:
        world.published.append(event)
        _finish(world, event)

    @broker.subscriber(Subject.PROFILES_GET, queue="profiles")
    async def get_profile(query: ProfileQuery) -> ProfileReply:
        return ProfileReply(
            profile=next((p for p in world.profiles if p.id == query.profile_id), None)
        )

    @broker.subscriber(Subject.PROFILES_CREATE, queue="profiles")
    async def create(command: ProfileCreateCommand) -> ProfileCommandReply:
        world.commands.append(command)
        if any(p.name.lower() == command.fields.name.lower() for p in world.profiles):
            return ProfileCommandReply(
                error=RemoteError(code="conflict", status=409, message="The name is taken.")
            )
        profile = Profile(
            **command.fields.model_dump(), id=str(uuid.uuid4()), created_at=NOW, updated_at=NOW
        )
        world.profiles.append(profile)
        return ProfileCommandReply(profile=profile)

    @broker.subscriber(Subject.PROFILES_REPLACE, queue="profiles")
    async def replace(command: ProfileReplaceCommand) -> ProfileCommandReply:
        world.commands.append(command)
        for i, current in enumerate(world.profiles):
            if current.id == command.profile_id:
                world.profiles[i] = Profile(
                    **command.fields.model_dump(),
                    id=current.id,
                    created_at=current.created_at,
                    updated_at=NOW,
                )
                return ProfileCommandReply(profile=world.profiles[i])
        return ProfileCommandReply(error=RemoteError(code="not_found", status=404, message="No."))

    @broker.subscriber(Subject.PROFILES_DELETE, queue="profiles")
    async def delete(command: ProfileDeleteCommand) -> ProfileCommandReply:
        world.commands.append(command)
        world.profiles = [p for p in world.profiles if p.id != command.profile_id]
        return ProfileCommandReply()

    @broker.subscriber(Subject.AUDITS_LIST, queue="profiles")
    async def audits(query: AuditListQuery) -> AuditPageReply:
        world.audit_queries.append(query)
        if query.since is not None and query.until is not None and query.since >= query.until:
            return AuditPageReply(
                error=RemoteError(code="invalid_input", status=422, message="since >= until")
            )
        rows = [
            r
            for r in world.audits
            if (query.user_id is None or r.user_id == query.user_id)
            and (query.profile_id is None or r.profile_id == query.profile_id)
            and (query.status is None or r.status == query.status)
            and (
                query.error_class is None or (r.error and r.error.error_class == query.error_class)
            )
            and (query.text is None or query.text.lower() in r.prompt.lower())
        ]
        page = rows[query.offset : query.offset + query.limit]
        return AuditPageReply(items=page, total=len(rows), limit=query.limit, offset=query.offset)

    @broker.subscriber(Subject.AUDITS_SUMMARY, queue="profiles")
    async def summary(query: AuditFilterQuery) -> AuditSummaryReply:
        rows = world.audits
        by_status: dict[str, int] = {}
        for r in rows:
            by_status[r.status] = by_status.get(r.status, 0) + 1
        return AuditSummaryReply(
            total=AuditTally(
                jobs=len(rows), images=sum(r.landed for r in rows), cost=sum(r.cost for r in rows)
            ),
            by_status=by_status,
            by_error_class={"content_blocked": sum(r.moderated for r in rows)},
            by_user=[AuditUserTally(user_id="alice", jobs=len(rows), images=0, cost=0)],
            by_profile=[
                AuditProfileTally(
                    profile_id="p", profile_name="DALL-E 3", jobs=len(rows), images=0, cost=0
                )
            ],
        )

    @broker.subscriber(Subject.MEDIA_ASSIGNMENTS, queue="media")
    async def assignments(query: ProjectAssignmentsQuery) -> ProjectAssignmentsReply:
        cover = world.cover if world.cover and world.cover.project == query.project else None
        return ProjectAssignmentsReply(cover=cover, elements=world.element_images)

    @broker.subscriber(Subject.MEDIA_ASSIGNED, stream=MEDIA_STREAM.name)
    async def assigned(event: MediaAssigned) -> None:
        world.assigned.append(event)


def register_file_fakes(broker: NatsBroker, world: InkweldWorld) -> None:
    """Media's project files, simplified: no re-encoding; an image is any `image/*` upload."""

    @broker.subscriber(Subject.MEDIA_UPLOAD_SLOT, queue="media")
    async def upload_slot(request: UploadSlotRequest) -> UploadSlotReply:
        key = f"uploads/{request.project}/{uuid.uuid4().hex}"
        return UploadSlotReply(staging_key=key, put_url=f"http://s3.test/{key}", expires_s=300)

    @broker.subscriber(Subject.MEDIA_STORE_FILE, queue="media")
    async def store_file(command: StoreFileCommand) -> StoreFileReply:
        data = world.objects.pop(f"/{command.staging_key}", None)
        if data is None:
            return StoreFileReply(error=RemoteError(code="upload_missing", status=404, message="?"))
        if hashlib.sha256(data).hexdigest() != command.sha256 or len(data) != command.size_bytes:
            return StoreFileReply(
                error=RemoteError(code="upload_mismatch", status=400, message="?")
            )
        content_type = command.content_type or "application/octet-stream"
        name = command.filename or ""
        if command.as_cover:
            name, content_type = f"cover-{len(world.files) + 1700000000000}.jpg", "image/jpeg"
            for key in [k for k in world.files if k[0] == command.project]:
                if key[1].startswith("cover-"):
                    del world.files[key]
        media = None
        if content_type.startswith("image/"):
            media = next(
                (
                    m
                    for m in world.media.values()
                    if m.project == command.project and m.sha256 == command.sha256
                ),
                None,
            ) or make_media(
                f"upload-{command.sha256[:8]}",
                command.project,
                sha256=command.sha256,
                source="uploaded",
                size_bytes=len(data),
            )
            world.media[media.id] = media
        world.objects[f"/files/{command.sha256}"] = data
        stored = ProjectFile(
            project=command.project,
            filename=name,
            content_type=content_type,
            size_bytes=len(data),
            sha256=command.sha256,
            uploaded_at=NOW,
            uploaded_by=command.uploaded_by,
            media_id=media.id if media else None,
        )
        world.files[(command.project, name)] = stored
        return StoreFileReply(file=stored, media=media)

    @broker.subscriber(Subject.MEDIA_FILES, queue="media")
    async def files(query: ProjectFilesQuery) -> ProjectFilesReply:
        mine = sorted(
            (f for (project, _), f in world.files.items() if project == query.project),
            key=lambda f: f.filename,
        )
        return ProjectFilesReply(
            files=mine[query.offset : query.offset + query.limit], total=len(mine)
        )

    @broker.subscriber(Subject.MEDIA_FILE, queue="media")
    async def file(query: ProjectFileQuery) -> ProjectFileReply:
        found = world.files.get((query.project, query.filename))
        if found is None:
            return ProjectFileReply()
        return ProjectFileReply(file=found, content_url=f"http://s3.test/files/{found.sha256}")

    @broker.subscriber(Subject.MEDIA_MARK_DELIVERED, queue="media")
    async def mark_delivered(command: MarkDeliveredCommand) -> MarkDeliveredReply:
        marked = 0
        for media_id in command.media_ids:
            item = world.media.get(media_id)
            if item is not None and item.project == command.project:
                world.media[media_id] = item.model_copy(update={"delivered_at": datetime.now(UTC)})
                world.delivered.append(media_id)
                marked += 1
        return MarkDeliveredReply(marked=marked)


def world_storage(world: InkweldWorld) -> Any:
    """gateway_testkit's storage, plus PUTs to presigned staging URLs and the stored files."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "s3.test" and request.method == "PUT":
            world.objects[request.url.path] = request.read()
            return httpx.Response(200)
        if request.url.host == "s3.test" and request.url.path in world.objects:
            return httpx.Response(200, content=world.objects[request.url.path])
        return storage_app(request)

    return handle


class QuietSubscription:
    """No status event ever comes: a follower re-reads the job from dispatch every `wait_s`."""

    def __init__(self) -> None:
        self.closed = 0

    async def next_update(self, wait_s: float) -> StatusUpdate | None:
        await asyncio.sleep(min(wait_s, 0.05))
        return None

    async def close(self) -> None:
        self.closed += 1


@dataclass
class InkweldHarness:
    client: httpx.AsyncClient
    world: InkweldWorld
    broker: NatsBroker
    app: FastAPI
    subscriptions: list[QuietSubscription]


@asynccontextmanager
async def inkweld_gateway(
    world: InkweldWorld | None = None, *, env: dict[str, str] | None = None
) -> AsyncIterator[InkweldHarness]:
    """The gateway on the in-memory broker; `env` sets `ATELIER_GATEWAY_INKWELD_*` settings."""
    world = world or InkweldWorld(profiles=[make_profile(), openai_profile()])
    with mock.patch.dict(os.environ, env or {}):
        app = create_app(
            test_settings(sse_resync_s=0.05),
            media_transport=httpx.MockTransport(world_storage(world)),
        )
    broker: NatsBroker = app.state.broker
    register_inkweld_fakes(broker, world)
    register_file_fakes(broker, world)
    subscriptions: list[QuietSubscription] = []

    async def subscribe_status(subject: str) -> QuietSubscription:
        subscription = QuietSubscription()
        subscriptions.append(subscription)
        return subscription

    app.state.backends.subscribe_status = subscribe_status
    async with (
        TestNatsBroker(broker),
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        yield InkweldHarness(client, world, broker, app, subscriptions)


# --- the document's schemas, for validating answers ------------------------------------------


def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return loaded


def _openapi30_to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema → JSON Schema: `nullable` becomes a `null` alternative, refs point at
    `#/components/schemas` of the same document."""
    if isinstance(node, list):
        return [_openapi30_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _openapi30_to_json_schema(v) for k, v in node.items() if k != "nullable"}
    converted.pop("example", None)
    if node.get("nullable") is True:
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def response_schema(operation_id: str, status: int) -> dict[str, Any] | None:
    """The JSON schema of an operation's answer with this status (None: not JSON); fails the
    test if the document does not list the status."""
    document = spec()
    for item in document["paths"].values():
        for operation in item.values():
            if operation.get("operationId") != operation_id:
                continue
            responses = operation["responses"]
            assert str(status) in responses, f"{operation_id} does not document {status}"
            content = responses[str(status)].get("content", {})
            if "application/json" not in content:
                return None
            schema = content["application/json"]["schema"]
            return {
                **_openapi30_to_json_schema(schema),
                "components": _openapi30_to_json_schema(document["components"]),
            }
    raise AssertionError(f"no operation {operation_id}")


def assert_conforms(operation_id: str, response: httpx.Response) -> Any:
    """The answer's status is documented and its JSON body fits the document's schema."""
    schema = response_schema(operation_id, response.status_code)
    if schema is None:
        assert response.content, f"{operation_id}: empty body"
        return response.content
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    jsonschema.validate(body, schema, cls=jsonschema.Draft7Validator)
    return body
