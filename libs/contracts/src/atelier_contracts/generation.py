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
    seed: int | None = None
    reference_images: list[ReferenceImageRef] = Field(default_factory=list)
    deadline_at: datetime = Field(description="After this the task is abandoned as timed out")
    attempt: int = Field(default=1, ge=1)


class GenerationStarted(Event):
    type: Literal["gen.started"] = "gen.started"
    task_id: str
    job_id: str
    project: str
    provider: str
    attempt: int = 1


class GenerationProgress(Event):
    """How far a running task's provider call is, as the provider reports it (queue position,
    sampling steps, websocket progress); at most about one a second per task."""

    type: Literal["gen.progress"] = "gen.progress"
    task_id: str
    job_id: str
    project: str
    provider: str
    attempt: int = 1
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


class StagedImage(BaseModel):
    """Bytes a worker wrote to the staging bucket; media lands them."""

    index: int
    staging_key: str
    content_type: str
    width: int
    height: int
    size_bytes: int
    seed: int | None = None
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
