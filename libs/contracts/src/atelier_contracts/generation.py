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
