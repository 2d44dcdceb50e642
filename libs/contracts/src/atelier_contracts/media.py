"""Landed images and their provenance."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from atelier_contracts.envelope import Event


class MediaItem(BaseModel):
    id: str
    project: str
    job_id: str
    task_id: str
    index: int
    content_type: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    original_key: str
    thumbnail_key: str
    profile_id: str
    provider: str
    model: str
    prompt: str = Field(description="The prompt exactly as sent to the provider")
    size: str
    seed: int | None = None
    revised_prompt: str | None = None
    created_at: datetime


class MediaLanded(Event):
    type: Literal["media.landed"] = "media.landed"
    job_id: str
    task_id: str
    project: str
    media: list[MediaItem]


# Request/reply queries answered by media.
class MediaQuery(BaseModel):
    media_id: str


class MediaReply(BaseModel):
    media: MediaItem | None
    content_url: str | None = Field(default=None, description="Short-lived presigned URL")
    thumbnail_url: str | None = Field(default=None, description="Short-lived presigned URL")


class MediaListQuery(BaseModel):
    project: str
    limit: int = Field(default=100, ge=1, le=500)
    offset: int = Field(default=0, ge=0)


class MediaListReply(BaseModel):
    items: list[MediaItem]
    total: int


class MediaAssigned(Event):
    """A writer chose a landed image as the project's cover or as an element's image.

    Newest wins per slot (project cover, or one element's image), ordered by `occurred_at`
    (then `event_id`), so a redelivered or late event never replaces a newer choice.
    """

    type: Literal["media.assigned"] = "media.assigned"
    media_id: str = Field(description="The landed image chosen")
    project: str = Field(description="The image's project, which the assignment belongs to")
    target: Literal["cover", "element"] = Field(examples=["cover"])
    element_id: str | None = Field(
        default=None, max_length=200, description="The element, when `target` is `element`"
    )
    assigned_by: str = Field(description="User id of the writer who chose it")

    @model_validator(mode="after")
    def _element_needs_id(self) -> MediaAssigned:
        if (self.target == "element") != bool(self.element_id):
            raise ValueError("element_id is required for target 'element' and only for it")
        return self


class ProjectAssignmentsQuery(BaseModel):
    project: str


class ProjectAssignmentsReply(BaseModel):
    """What a project's cover and element images currently are (absent: never assigned)."""

    cover: MediaItem | None = None
    elements: dict[str, MediaItem] = Field(default_factory=dict)
