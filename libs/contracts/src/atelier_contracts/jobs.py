"""A generation job: the user's request, its enrichment and its lifecycle."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from atelier_contracts.envelope import Event
from atelier_contracts.errors import ErrorInfo
from atelier_contracts.profiles import ProfileSnapshot
from atelier_contracts.subjects import PROJECT_ID_PATTERN


class ElementImage(BaseModel):
    """Where an element's picture comes from: exactly one of the three."""

    media_id: str | None = None
    url: str | None = Field(default=None, max_length=2048)
    data_url: str | None = Field(
        default=None,
        max_length=5_000_000,
        description="A `data:image/...;base64,` URL of at most 5 MB; larger pictures should be "
        "uploaded to the media library and referenced by `media_id`",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ElementImage:
        given = [x for x in (self.media_id, self.url, self.data_url) if x]
        if len(given) != 1:
            raise ValueError("an element image needs exactly one of media_id, url or data_url")
        return self


class SendToggles(BaseModel):
    image: bool = True
    description: bool = True
    data: bool = True


class ContextElement(BaseModel):
    """A worldbuilding element (character, location...) picked as context in the dialog."""

    id: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=300, examples=["Mara Vell"])
    type: str = Field(default="element", max_length=60, examples=["character"])
    description: str | None = Field(default=None, max_length=20_000)
    data: dict[str, Any] = Field(default_factory=dict)
    image: ElementImage | None = None
    send: SendToggles = Field(default_factory=SendToggles)


class GenerationContext(BaseModel):
    elements: list[ContextElement] = Field(default_factory=list, max_length=16)
    project_title: str | None = Field(
        default=None,
        max_length=300,
        description="Named by the cover template",
        examples=["The Salt Road"],
    )
    project_description: str | None = Field(
        default=None, max_length=2000, description="Named by the cover template"
    )


class Target(BaseModel):
    """Where the result is meant to go; every image lands in the media library regardless."""

    kind: Literal["media", "cover", "element"] = "media"
    element_id: str | None = None

    @model_validator(mode="after")
    def _element_needs_id(self) -> Target:
        if self.kind == "element" and not self.element_id:
            raise ValueError("target kind 'element' needs an element_id")
        return self


class JobStatus(StrEnum):
    QUEUED = "queued"
    ENRICHING = "enriching"
    DISPATCHED = "dispatched"
    GENERATING = "generating"
    LANDING = "landing"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.PARTIAL, JobStatus.FAILED, JobStatus.CANCELLED}
)


class JobRequested(Event):
    """Published by the gateway once a request passed validation."""

    type: Literal["jobs.requested"] = "jobs.requested"
    job_id: str
    user_id: str
    project: str = Field(pattern=PROJECT_ID_PATTERN)
    profile: ProfileSnapshot
    prompt: str
    size: str
    count: int
    options: dict[str, Any] = Field(
        default_factory=dict, description="Options after defaults were applied"
    )
    context: GenerationContext = Field(default_factory=GenerationContext)
    target: Target = Field(default_factory=Target)
    idempotency_key: str | None = None
    request_digest: str | None = Field(
        default=None,
        description="SHA-256 of the request as the user sent it (canonical JSON), kept on the "
        "job so a reused Idempotency-Key with a different request is told apart",
    )


class ReferenceImageRef(BaseModel):
    """A reference image the context service validated, downscaled and staged for the model."""

    staging_key: str = Field(description="Key in the staging bucket")
    content_type: str
    width: int
    height: int
    size_bytes: int
    element_id: str | None = None
    source: Literal["media", "url", "data_url"] = "media"
    media_id: str | None = Field(default=None, description="When it came from the media library")


class SentReferenceImage(BaseModel):
    """A reference image the model was sent, as a job shows it: where it came from and its size
    after downscaling; the staging key stays inside Atelier."""

    element_id: str | None = None
    source: Literal["media", "url", "data_url"] = "media"
    media_id: str | None = Field(default=None, description="When it came from the media library")
    content_type: str
    width: int
    height: int
    size_bytes: int

    @classmethod
    def of(cls, ref: ReferenceImageRef) -> SentReferenceImage:
        return cls(
            element_id=ref.element_id,
            source=ref.source,
            media_id=ref.media_id,
            content_type=ref.content_type,
            width=ref.width,
            height=ref.height,
            size_bytes=ref.size_bytes,
        )


class ExcludedImage(BaseModel):
    """An element image that was not sent, and why."""

    element_id: str
    reason: str = Field(examples=["Over the maximum: Sketch takes at most 1 reference image."])


class AssembledPrompt(BaseModel):
    """What the model is sent, stored on the job and shown to the user: nothing hidden."""

    prompt: str
    negative_prompt: str | None = None
    elements_used: list[str] = Field(default_factory=list, description="Element ids used")
    notes: list[str] = Field(
        default_factory=list, description="What was left out or trimmed, and why"
    )
    reference_images: list[ReferenceImageRef] = Field(default_factory=list)
    excluded_images: list[ExcludedImage] = Field(default_factory=list)


# Request/reply query answered by the context service: what a request would send, nothing staged.
class ContextPreviewQuery(BaseModel):
    user_id: str
    project: str = Field(pattern=PROJECT_ID_PATTERN)
    profile: ProfileSnapshot
    prompt: str
    size: str
    count: int = 1
    options: dict[str, Any] = Field(default_factory=dict)
    context: GenerationContext = Field(default_factory=GenerationContext)
    target: Target = Field(default_factory=Target)


class ReferenceImagePreview(BaseModel):
    """A reference image a generation would send, as it would be sent (after downscaling)."""

    element_id: str
    source: Literal["media", "url", "data_url"]
    media_id: str | None = None
    content_type: str
    width: int
    height: int
    size_bytes: int


class ContextPreviewReply(BaseModel):
    prompt: str
    negative_prompt: str | None = None
    elements_used: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    reference_images: list[ReferenceImagePreview] = Field(default_factory=list)
    excluded_images: list[ExcludedImage] = Field(default_factory=list)


class JobEnriched(Event):
    """Published by the context service; carries the request so order of arrival never matters."""

    type: Literal["jobs.enriched"] = "jobs.enriched"
    request: JobRequested
    assembled: AssembledPrompt


class JobImage(BaseModel):
    media_id: str
    index: int
    width: int
    height: int
    content_type: str


class JobProgress(BaseModel):
    total: int = Field(description="Images asked for")
    landed: int = 0
    failed: int = 0
    fraction: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="How far generation is (0..1), from the providers' own progress; only on "
        "status events sent while images are being made, never stored",
    )
    detail: str | None = Field(
        default=None,
        max_length=200,
        description="What the provider says it is doing",
        examples=["queued at position 3", "step 12/30, about 8 s left"],
    )


class JobView(BaseModel):
    """A job as the gateway shows it."""

    id: str
    project: str
    user_id: str
    profile_id: str
    profile_name: str
    provider: str
    model: str
    status: JobStatus
    prompt: str
    assembled_prompt: str | None = None
    assembly_notes: list[str] = Field(default_factory=list)
    reference_images: list[SentReferenceImage] = Field(
        default_factory=list, description="The reference images sent with the prompt, in order"
    )
    excluded_images: list[ExcludedImage] = Field(
        default_factory=list, description="Element images that were not sent, each with why"
    )
    size: str
    count: int
    options: dict[str, Any] = Field(default_factory=dict)
    target: Target = Field(default_factory=Target)
    progress: JobProgress
    images: list[JobImage] = Field(default_factory=list)
    error: ErrorInfo | None = None
    created_at: datetime
    updated_at: datetime
    request_digest: str | None = Field(
        default=None, description="`JobRequested.request_digest`; internal, not shown to users"
    )


class JobStatusChanged(Event):
    """Published by dispatch on every transition, to `jobs.status.<project>.<job_id>`; the final
    one is published a second time, with its own event id, to `jobs.finished.<project>.<job_id>`
    (same shape: consumers of outcomes read it with this model)."""

    type: Literal["jobs.status"] = "jobs.status"
    job: JobView


# Request/reply queries answered by dispatch.
class JobQuery(BaseModel):
    job_id: str


class JobReply(BaseModel):
    job: JobView | None


class CancelJobCommand(BaseModel):
    """Request/reply to dispatch; answered with `JobReply` (the job after the cancel)."""

    job_id: str
    requested_by: str = Field(description="User id, for the audit")


class JobListQuery(BaseModel):
    project: str
    active_only: bool = True
    limit: int = Field(default=50, ge=1, le=500)


class JobListReply(BaseModel):
    jobs: list[JobView]
