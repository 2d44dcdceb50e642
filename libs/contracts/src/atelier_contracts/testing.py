"""Factories of valid contract objects, for the tests of every service.

Each one returns a valid object of one small made-up world (user `alice`, project `alpha`, the
offline `Sketch` profile, a lighthouse); a test passes as keywords the fields it is about, and
nothing else. An override that names no field of the model raises `TypeError`, so a typo never
passes unnoticed (events ignore unknown fields).

Test code only: production code never imports this module (`make lint` checks it). It lives
beside the models so that a field added to a contract gets its default in the same change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import uuid4

from pydantic import BaseModel

from atelier_contracts.generation import GenerationTask
from atelier_contracts.jobs import (
    AssembledPrompt,
    JobEnriched,
    JobProgress,
    JobRequested,
    JobStatus,
    JobView,
)
from atelier_contracts.media import MediaItem, MediaLanded
from atelier_contracts.profiles import Profile, ProfileSnapshot

USER = "alice"
PROJECT = "alpha"
PROMPT = "A lighthouse"
SIZE = "1024x1024"
# Views and library items carry this time unless a test gives one: objects built apart compare
# equal, and one read back from a database matches the one written.
CREATED_AT = datetime(2025, 1, 1, tzinfo=UTC)
# How long a test waits for a request/reply: a loaded 2-core machine (the suite on two
# processes, a stack or two beside it) can take longer than production's 3 s deadline.
QUERY_TIMEOUT_S = 10.0

M = TypeVar("M", bound=BaseModel)


def _build(model: type[M], defaults: dict[str, Any], overrides: dict[str, Any]) -> M:
    unknown = sorted(overrides.keys() - model.model_fields.keys())
    if unknown:
        raise TypeError(f"{model.__name__} has no field {', '.join(unknown)}")
    return model.model_validate({**defaults, **overrides})


def profile_snapshot(**overrides: Any) -> ProfileSnapshot:
    defaults = {
        "id": "sketch",
        "name": "Sketch",
        "provider": "offline",
        "model": "offline-sketch",
        "timeout_s": 60.0,
        "prompt_max_length": 4000,
        "max_reference_images": 0,
        "credit_cost": 1.0,
    }
    return _build(ProfileSnapshot, defaults, overrides)


def job_requested(**overrides: Any) -> JobRequested:
    """A request for one image, under a new job id at each call."""
    defaults = {
        "job_id": str(uuid4()),
        "user_id": USER,
        "project": PROJECT,
        "profile": profile_snapshot(),
        "prompt": PROMPT,
        "size": SIZE,
        "count": 1,
    }
    return _build(JobRequested, defaults, overrides)


def job_enriched(
    request: JobRequested, *, prompt: str | None = None, **overrides: Any
) -> JobEnriched:
    """`request` enriched: the assembled prompt is `prompt`, by default the request's own."""
    defaults = {
        "job_id": request.job_id,
        "project": request.project,
        "assembled": AssembledPrompt(prompt=request.prompt if prompt is None else prompt),
    }
    return _build(JobEnriched, defaults, overrides)


def generation_task(**overrides: Any) -> GenerationTask:
    """The first task of a job of one image, due within five minutes."""
    job_id = overrides.get("job_id", str(uuid4()))
    defaults = {
        "task_id": f"{job_id}.0",
        "job_id": job_id,
        "user_id": USER,
        "project": PROJECT,
        "profile": profile_snapshot(),
        "prompt": PROMPT,
        "size": SIZE,
        "n": 1,
        "first_index": 0,
        "deadline_at": datetime.now(UTC) + timedelta(minutes=5),
    }
    return _build(GenerationTask, defaults, overrides)


def media_item(**overrides: Any) -> MediaItem:
    """An image in the library, its object keys named after its id."""
    media_id = overrides.get("id", "media-1")
    defaults = {
        "id": media_id,
        "project": PROJECT,
        "job_id": "job-1",
        "task_id": "task-1",
        "index": 0,
        "content_type": "image/png",
        "width": 64,
        "height": 64,
        "size_bytes": 8,
        "sha256": "ab" * 32,
        "original_key": f"originals/{media_id}.png",
        "thumbnail_key": f"thumbnails/{media_id}.webp",
        "profile_id": "sketch",
        "provider": "offline",
        "model": "offline-sketch",
        "prompt": PROMPT,
        "size": SIZE,
        "created_at": CREATED_AT,
    }
    return _build(MediaItem, defaults, overrides)


def media_landed(task: GenerationTask, **item_overrides: Any) -> MediaLanded:
    """Media landed the first image of `task` (id `m-<task_id>`), with the task's provenance."""
    of_task = {
        "id": f"m-{task.task_id}",
        "project": task.project,
        "job_id": task.job_id,
        "task_id": task.task_id,
        "index": task.first_index,
        "profile_id": task.profile.id,
        "provider": task.profile.provider,
        "model": task.profile.model,
        "prompt": task.prompt,
        "size": task.size,
    }
    item = media_item(**{**of_task, **item_overrides})
    return MediaLanded(job_id=task.job_id, task_id=task.task_id, project=task.project, media=[item])


def job_view(*, profile: Profile | ProfileSnapshot | None = None, **overrides: Any) -> JobView:
    """A queued job as the gateway shows it, made with `profile` (by default the `Sketch` one);
    its progress counts `count` images."""
    made_with = profile or profile_snapshot()
    defaults = {
        "id": str(uuid4()),
        "project": PROJECT,
        "user_id": USER,
        "profile_id": made_with.id,
        "profile_name": made_with.name,
        "provider": made_with.provider,
        "model": made_with.model,
        "status": JobStatus.QUEUED,
        "prompt": PROMPT,
        "size": SIZE,
        "count": 1,
        "progress": JobProgress(total=overrides.get("count", 1)),
        "created_at": CREATED_AT,
        "updated_at": CREATED_AT,
    }
    return _build(JobView, defaults, overrides)
