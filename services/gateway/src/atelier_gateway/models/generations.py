"""What the generation routes answer: the accepted job, the job itself, the preview, the
estimate and the features."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, computed_field

from atelier_contracts.errors import BlockedInput, ErrorClass
from atelier_contracts.jobs import (
    SHORT_TEXT_CHARS,
    ExcludedImage,
    JobCore,
    JobImage,
    JobProgress,
    JobStatus,
    JobView,
    ReferenceImagePreview,
    SentReferenceImage,
    Target,
)
from atelier_contracts.profiles import Money, OptionSpec, Profile
from atelier_contracts.receipts import JobReceipt
from atelier_contracts.style import AppliedStyle
from atelier_gateway.models.shown import shown_fields
from atelier_gateway.models.urls import generation_events_url, generation_url, media_urls


class Links(BaseModel):
    self: str
    events: str

    @classmethod
    def of_job(cls, job_id: str) -> Links:
        return cls(self=generation_url(job_id), events=generation_events_url(job_id))


class GenerationAccepted(BaseModel):
    id: str
    status: JobStatus
    project: str
    links: Links


class ContextPreview(BaseModel):
    """`POST /v1/context/preview`: exactly what a generation with the same body would send."""

    prompt: str = Field(description="The prompt as the model would get it")
    negative_prompt: str | None = None
    elements_used: list[str]
    notes: list[str] = Field(description="What was left out or shortened, and why")
    reference_images: list[ReferenceImagePreview]
    excluded_images: list[ExcludedImage] = Field(
        description="Element images that would not be sent, each with the reason"
    )
    style: AppliedStyle | None = Field(
        default=None,
        description="Where the project's style would go: its words' place in `prompt` and "
        "which of its images would be sent; null when the project has none",
    )


class FeatureProfile(BaseModel):
    id: str
    name: str
    provider: str
    model: str
    sizes: list[str]
    default_size: str
    counts: list[int]
    options: list[OptionSpec]
    max_reference_images: int
    supports_reference_images: bool
    prompt_max_length: int

    @classmethod
    def of(cls, profile: Profile) -> FeatureProfile:
        return cls(
            **shown_fields(cls, profile),
            supports_reference_images=profile.max_reference_images > 0,
        )


class Features(BaseModel):
    enabled: bool
    reason: str | None = None
    profiles: list[FeatureProfile]


class JobError(BaseModel):
    """What went wrong, for the user; the provider's own detail stays in the admin audit."""

    error_class: ErrorClass = Field(examples=["content_blocked"])
    message: str
    stage: str | None = Field(
        default=None, description="For content blocks: `input` or `output`", examples=["input"]
    )
    category: str | None = Field(
        default=None,
        description="For content blocks: the provider's categories (lowercased, comma-"
        "separated), when its API names them",
        examples=["violence"],
    )
    input: BlockedInput | None = Field(
        default=None,
        description="For input-stage content blocks: the prompt or which reference image "
        "(its element id), when known",
    )
    retry_after_s: float | None = None

    # DESIGN.md §6 names the field `class`; the contracts (and clients written against them)
    # say `error_class`. Both are served until one is retired.
    @computed_field(alias="class")  # type: ignore[prop-decorator]
    @property
    def class_(self) -> ErrorClass:
        return self.error_class


class JobImageOut(JobImage):
    """A job's image with the gateway URLs of its bytes."""

    content_url: str
    thumbnail_url: str


class JobOut(JobCore):
    assembled_prompt: str | None
    assembly_notes: list[str]
    reference_images: list[SentReferenceImage] = Field(
        description="The reference images sent with the prompt, in order, as sent"
    )
    excluded_images: list[ExcludedImage] = Field(
        description="Element images that were not sent, each with the reason"
    )
    size: str
    count: int
    options: dict[str, Any]
    target: Target
    progress: JobProgress
    images: list[JobImageOut]
    error: JobError | None
    created_at: datetime
    updated_at: datetime
    texts_shortened: bool = Field(
        description=f"`prompt` and `assembled_prompt` are their first {SHORT_TEXT_CHARS} "
        "characters (listings and the project's event stream); the job read by id, and its "
        "own event stream, have them whole"
    )
    style: AppliedStyle | None = Field(
        default=None,
        description="Where the project's style went: its words' place in `assembled_prompt` "
        "and which of its images were sent; null when the project has none",
    )
    receipt: JobReceipt | None = Field(
        default=None,
        description="Once the job is final: each image charged or not and why (failed, "
        "blocked and cancelled images are not charged), and the totals",
    )
    links: Links

    @classmethod
    def of(cls, job: JobView) -> JobOut:
        # What the public models do not declare (the request digest, the provider's detail of
        # an error) is left out: validation ignores fields a model does not have.
        return cls.model_validate(
            {
                **job.model_dump(),
                "images": [
                    {**image.model_dump(), **media_urls(image.media_id)} for image in job.images
                ],
                "links": Links.of_job(job.id),
            }
        )


class JobList(BaseModel):
    jobs: list[JobOut]


class GenerationEstimate(BaseModel):
    """`POST /v1/generations/estimate`: what submitting the same body would reserve now."""

    profile_id: str
    count: int
    credits: float = Field(description="Credits a submission now would reserve")
    credits_per_image: float
    money: Money | None = Field(
        default=None,
        description="The provider's price for these images, when the profile states one",
    )
    limit: float | None = Field(default=None, description="Your credits per period; null: none")
    remaining: float | None = Field(default=None, description="Your credits left now")
    fits: bool = Field(description="False: a submission now would be refused for quota")
    resets_at: datetime | None = None
