"""A generation job: the user's request, its enrichment and its lifecycle."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from atelier_contracts.envelope import Event
from atelier_contracts.errors import ErrorInfo

# Re-exported: `JobRequested.fallbacks` is bounded by it.
from atelier_contracts.profiles import MAX_FALLBACKS as MAX_FALLBACKS
from atelier_contracts.profiles import ProfileSnapshot
from atelier_contracts.receipts import JobReceipt as JobReceipt
from atelier_contracts.receipts import ReceiptLine as ReceiptLine
from atelier_contracts.staging import StagedInput
from atelier_contracts.style import AppliedStyle
from atelier_contracts.subjects import PROJECT_ID_PATTERN


class ElementImage(BaseModel):
    """Where an element's picture comes from: exactly one of the three (four in an event)."""

    media_id: str | None = None
    url: str | None = Field(default=None, max_length=2048)
    data_url: str | None = Field(
        default=None,
        max_length=5_000_000,
        description="A `data:image/...;base64,` URL of at most 5 MB; larger pictures should be "
        "uploaded to the media library and referenced by `media_id`. In events only from "
        "publishers older than ADR 0017: the gateway stages it and sends `staged` instead",
    )
    staged: StagedInput | None = Field(
        default=None,
        description="Event-only (ADR 0017): the picture the request carried as a data URL, "
        "decoded and written by the gateway to the staging bucket. The public API never takes it",
    )
    withheld: bool = Field(
        default=False,
        description="Event-only (ADR 0017): the element's picture came as a data URL with "
        "`send.image` off; it is never sent, so its bytes were not staged",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ElementImage:
        kinds = (self.media_id, self.url, self.data_url, self.staged, self.withheld)
        given = [x for x in kinds if x]
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


class FallbackPlan(BaseModel):
    """One step of the job's profile's fallback chain, planned by the gateway at submission: what
    a task runs on once the profiles before it were unavailable after their retries. The
    fallback profile's own checks were applied to the request, and `notes` say what changed."""

    profile: ProfileSnapshot = Field(description="The fallback profile as it was at submission")
    size: str = Field(
        description="The fallback profile's size nearest the asked one (the asked one when it "
        "makes it): closest in pixel area, then in aspect ratio",
        examples=["1024x1024"],
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="The job's options the fallback profile accepts, over its own defaults; "
        "those it lacks or whose value it refuses are left out (each with a note)",
    )
    notes: list[str] = Field(
        default_factory=list,
        description="What the fallback changes about the request, in plain sentences",
        examples=[
            [
                "Profile 'B' has no option 'style': left out.",
                "Profile 'B' makes 1024x1024, nearest to the asked 1000x1000.",
            ]
        ],
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
    context: GenerationContext = Field(
        default_factory=GenerationContext,
        description="Empty when the context is staged (`staged_context`)",
    )
    staged_context: StagedInput | None = Field(
        default=None,
        description="The request's context as JSON in the staging bucket, when it is too large "
        "to travel inline (ADR 0017); `context` is then empty",
    )
    target: Target = Field(default_factory=Target)
    idempotency_key: str | None = None
    request_digest: str | None = Field(
        default=None,
        description="SHA-256 of the request as the user sent it (canonical JSON), kept on the "
        "job so a reused Idempotency-Key with a different request is told apart",
    )
    fallbacks: list[FallbackPlan] = Field(
        default_factory=list,
        max_length=MAX_FALLBACKS,
        description="The profile's fallback chain in order, planned at submission: where a task "
        "goes when its provider is unavailable after its retries (never after a content block "
        "or an invalid request). Disabled profiles, and those whose prompt limit the prompt "
        "exceeds, are left out; empty when the profile has no fallback",
    )
    apply_style: bool = Field(
        default=True,
        description="Apply the project's style (ADR 0024); false leaves it out of this request",
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
    style: bool = Field(
        default=False,
        description="An image of the project's style (ADR 0024), not of an element",
    )


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
    style: bool = Field(
        default=False,
        description="An image of the project's style (ADR 0024), not of an element",
    )


class ExcludedImage(BaseModel):
    """An element image that was not sent, and why."""

    element_id: str
    reason: str = Field(examples=["Over the maximum: Sketch takes at most 1 reference image."])
    media_id: str | None = Field(
        default=None, description="For an image of the project's style: which one"
    )
    style: bool = Field(
        default=False,
        description="An image of the project's style (ADR 0024); `element_id` is then "
        "`project-style`",
    )


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
    style: AppliedStyle | None = Field(
        default=None, description="Where the project's style went (ADR 0024)"
    )


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
    staged_context: StagedInput | None = Field(
        default=None, description="As in `JobRequested`: the context, when it is staged"
    )
    target: Target = Field(default_factory=Target)
    apply_style: bool = Field(
        default=True,
        description="Apply the project's style (ADR 0024); false leaves it out of this request",
    )


class ReferenceImagePreview(SentReferenceImage):
    """A reference image a generation would send, as it would be sent (after downscaling)."""

    # Re-declared: a preview always names the image's element and source. A re-declared field
    # keeps its place, so the document lists the fields in the same order as before.
    element_id: str
    source: Literal["media", "url", "data_url"]
    media_id: str | None = None


class ContextPreviewReply(BaseModel):
    prompt: str
    negative_prompt: str | None = None
    elements_used: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    reference_images: list[ReferenceImagePreview] = Field(default_factory=list)
    excluded_images: list[ExcludedImage] = Field(default_factory=list)
    style: AppliedStyle | None = Field(
        default=None, description="Where the project's style would go (ADR 0024)"
    )


class JobEnriched(Event):
    """Published by the context service: what the model is sent, and nothing of the request
    again. Dispatch has the rest from `jobs.requested`, recorded in its own columns (ADR 0018)."""

    type: Literal["jobs.enriched"] = "jobs.enriched"
    job_id: str
    project: str = Field(pattern=PROJECT_ID_PATTERN)
    assembled: AssembledPrompt


class JobImage(BaseModel):
    media_id: str
    index: int
    width: int
    height: int
    content_type: str
    profile_id: str | None = Field(
        default=None,
        description="The profile that made it: the job's own, or one of its fallbacks",
    )
    profile_name: str | None = Field(default=None, examples=["Sketch (offline)"])
    credit_cost: float | None = Field(
        default=None,
        ge=0,
        description="Credits the image costs: the price per image of the profile that made it",
    )
    fallback_reason: str | None = Field(
        default=None,
        description="Why the image came from a fallback profile; null when the job's own "
        "profile made it",
        examples=["'A' (openai) was unavailable after 3 attempts: provider_unavailable"],
    )


class QueuePosition(BaseModel):
    """Where a job's next image stands in its provider's line while it waits for a call (a
    provider with a budget: dispatch holds the line and serves it one user at a time, ADR 0020)."""

    provider: str = Field(examples=["openai"])
    position: int = Field(
        ge=0,
        description="Calls to this provider, of every user, that go before the job's next "
        "image: 0 is next",
        examples=[3],
    )
    user_position: int = Field(
        ge=0,
        description="Of those, the user's own (fair share: every other user waiting gets one "
        "call between two of yours)",
        examples=[1],
    )


class JobProgress(BaseModel):
    total: int = Field(description="Images asked for")
    landed: int = 0
    failed: int = 0
    fraction: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="How far generation is (0..1), from the providers' own progress, while "
        "images are being made: on status events at each report, and on the job read by id "
        "as last stored (dispatch writes it at most every couple of seconds)",
    )
    detail: str | None = Field(
        default=None,
        max_length=200,
        description="What the provider says it is doing",
        examples=["queued at position 3", "step 12/30, about 8 s left"],
    )
    queue: QueuePosition | None = Field(
        default=None,
        description="While an image of the job waits for a call to a provider with a budget: "
        "where it stands in that provider's line (issue 21); null once every image is on its "
        "way, and for providers without a budget (their tasks go to the provider at once)",
    )


# A job's texts in listings and status events: a prompt can be 32,000 characters and the
# assembled prompt as long again, so those messages carry the start of each (ADR 0018 addendum);
# `jobs.query.get` answers them whole.
SHORT_TEXT_CHARS = 500


class JobCore(BaseModel):
    """What every view of a job starts with: whose it is, the profile it runs on, where it stands
    and what was asked. Dispatch's `JobView` and the gateway's public job both build on it."""

    id: str
    project: str
    user_id: str
    profile_id: str
    profile_name: str
    provider: str
    model: str
    status: JobStatus
    prompt: str


class JobView(JobCore):
    """A job as the gateway shows it."""

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
    style: AppliedStyle | None = Field(
        default=None,
        description="Where the project's style went in the assembled prompt and which of its "
        "images were sent (ADR 0024); null before enrichment",
    )
    receipt: JobReceipt | None = Field(
        default=None,
        description="Once the job is final: each image charged or not and why, and the totals",
    )
    texts_shortened: bool = Field(
        default=False,
        description=f"`prompt` and `assembled_prompt` are their first {SHORT_TEXT_CHARS} "
        "characters (listings and status events); the job read by id has them whole",
    )

    def with_short_texts(self) -> JobView:
        """This view for a listing or a status event: texts over `SHORT_TEXT_CHARS` cut."""
        assembled = self.assembled_prompt
        if len(self.prompt) <= SHORT_TEXT_CHARS and len(assembled or "") <= SHORT_TEXT_CHARS:
            return self
        return self.model_copy(
            update={
                "prompt": self.prompt[:SHORT_TEXT_CHARS],
                "assembled_prompt": assembled[:SHORT_TEXT_CHARS] if assembled else assembled,
                "texts_shortened": True,
            }
        )

    def with_texts_of(self, whole: JobView) -> JobView:
        """This (shortened) view with the whole texts of `whole`, the same job read by id."""
        return self.model_copy(
            update={
                "prompt": whole.prompt,
                "assembled_prompt": whole.assembled_prompt,
                "texts_shortened": whole.texts_shortened,
            }
        )


class JobStatusChanged(Event):
    """Published by dispatch for a change a person sees, to `jobs.status.<project>.<job_id>`; the
    outcome once, to `jobs.finished.<project>.<job_id>` (ADR 0018; watchers follow both)."""

    type: Literal["jobs.status"] = "jobs.status"
    job: JobView


# Request/reply queries answered by dispatch.
class JobQuery(BaseModel):
    job_id: str


class JobReply(BaseModel):
    """One job read by id, its texts whole. The assembled prompt always begins with the prompt
    (context appends to it), so a long one is sent as what follows the prompt: a job with the
    largest texts stays one small message (ADR 0018 addendum). Read it with `whole_job()`."""

    job: JobView | None
    assembled_after_prompt: str | None = Field(
        default=None,
        description="When set, `job.assembled_prompt` is left out: it is `job.prompt` (without "
        "its outer blanks) followed by this",
    )

    @classmethod
    def compact(cls, job: JobView | None) -> JobReply:
        if job is None or job.assembled_prompt is None:
            return cls(job=job)
        head = job.prompt.strip()
        if len(head) <= SHORT_TEXT_CHARS or not job.assembled_prompt.startswith(head):
            return cls(job=job)
        return cls(
            job=job.model_copy(update={"assembled_prompt": None}),
            assembled_after_prompt=job.assembled_prompt[len(head) :],
        )

    def whole_job(self) -> JobView | None:
        if self.job is None or self.assembled_after_prompt is None:
            return self.job
        assembled = self.job.prompt.strip() + self.assembled_after_prompt
        return self.job.model_copy(update={"assembled_prompt": assembled})


class CancelJobCommand(BaseModel):
    """Request/reply to dispatch; answered with `JobReply` (the job after the cancel)."""

    job_id: str
    requested_by: str = Field(description="User id, for the audit")


class JobListQuery(BaseModel):
    project: str
    active_only: bool = True
    limit: int = Field(default=50, ge=1, le=100)


class JobListReply(BaseModel):
    jobs: list[JobView]
