"""Per-image tasks for provider workers, and what the workers report back."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from atelier_contracts.envelope import Event
from atelier_contracts.errors import ErrorInfo
from atelier_contracts.jobs import ReferenceImageRef
from atelier_contracts.profiles import ProfileSnapshot


class GenerationTask(Event):
    """One provider call: `n` images of a job, starting at image `first_index`."""

    type: Literal["gen.requested"] = "gen.requested"
    task_id: str
    job_id: str
    user_id: str
    project: str
    profile: ProfileSnapshot
    prompt: str = Field(description="The assembled prompt, exactly as sent to the provider")
    negative_prompt: str | None = None
    size: str
    n: int = Field(ge=1, le=10)
    first_index: int = Field(ge=0)
    options: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = Field(
        default=None,
        description="The seed to send where the provider takes one; a provider that takes none "
        "never sees it (the image's own `seed` says what was used)",
    )
    reference_images: list[ReferenceImageRef] = Field(default_factory=list)
    deadline_at: datetime = Field(description="After this the task is abandoned as timed out")
    attempt: int = Field(default=1, ge=1)


class TaskReport(Event):
    """What a worker says about a task while it runs: which task, and which attempt of it."""

    task_id: str
    job_id: str
    project: str
    provider: str
    attempt: int = 1


class GenerationStarted(TaskReport):
    type: Literal["gen.started"] = "gen.started"


class GenerationProgress(TaskReport):
    """How far a running task's provider call is, as the provider reports it (queue position,
    sampling steps, websocket progress); at most about one a second per task."""

    type: Literal["gen.progress"] = "gen.progress"
    fraction: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Share of this task's provider work done, when the provider gives a figure",
        examples=[0.4],
    )
    detail: str | None = Field(
        default=None,
        max_length=200,
        description="What the provider says it is doing",
        examples=["queued at position 3", "step 12/30, about 8 s left"],
    )


# Where a worker writes a generated image: its final place in the media bucket, so media lands
# it without copying it. Unique to the task's bytes: a task run twice with different results
# writes two objects, and neither overwrites an image already landed.
GENERATED_PREFIX = "generated"
IMAGE_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
}


def generated_image_prefix(task: GenerationTask) -> str:
    """Every object of one task's images starts with this (and no other task's does)."""
    return f"{GENERATED_PREFIX}/{task.job_id}/{task.task_id}/"


def generated_image_key(task: GenerationTask, index: int, sha256: str, content_type: str) -> str:
    """The media-bucket key of image `index` of `task` with these bytes: the worker writes it,
    media checks an event's keys against it."""
    extension = IMAGE_EXTENSIONS.get(content_type, "bin")
    return f"{generated_image_prefix(task)}{index}-{sha256[:16]}.{extension}"


class StagedImage(BaseModel):
    """An image a worker wrote to the media bucket under `generated_image_key`; media verifies
    it, thumbnails it and records it."""

    index: int
    key: str = Field(
        description="Key in the media bucket: `generated/<job_id>/<task_id>/<index>-<sha256[:16]>"
        ".<ext>`",
        examples=["generated/job-1/task-1/0-9f86d081884c7d65.png"],
    )
    sha256: str = Field(
        pattern="^[0-9a-f]{64}$", description="SHA-256 of the bytes, hex, as the worker wrote them"
    )
    content_type: str
    width: int
    height: int
    size_bytes: int
    seed: int | None = Field(
        default=None,
        description="The seed the provider was sent or reported for this image, when that seed "
        "reproduces it; none otherwise (OpenAI and Gemini take no seed; one seed for a call of "
        "several images). Media records exactly this, never the task's `seed`",
        examples=[1234],
    )
    revised_prompt: str | None = None


class GenerationCompleted(Event):
    type: Literal["gen.completed"] = "gen.completed"
    task: GenerationTask
    images: list[StagedImage]
    usage: dict[str, Any] = Field(default_factory=dict)
    provider_request_id: str | None = None


class GenerationFailed(Event):
    type: Literal["gen.failed"] = "gen.failed"
    task: GenerationTask
    error: ErrorInfo
