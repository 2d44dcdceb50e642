"""Landed images and their provenance."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from atelier_contracts.envelope import Event
from atelier_contracts.profiles import RemoteError


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
    seed: int | None = Field(
        default=None,
        description="The seed the provider was sent or reported for this image, when that seed "
        "reproduces it; empty otherwise (OpenAI and Gemini take no seed)",
        examples=[1234],
    )
    revised_prompt: str | None = None
    created_at: datetime
    source: Literal["generated", "uploaded"] = Field(
        default="generated",
        description="`uploaded`: an image a writer uploaded (the app's media sync or a cover); "
        "its job, task, profile and prompt fields are empty",
    )
    delivered_at: datetime | None = Field(
        default=None,
        description="When a synchronous app route (`/api/v1/ai/image/generate[-stream]`) handed "
        "the bytes to the app, which keeps its own copy and uploads it under its own name",
    )


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


# Project files: what the app's media sync and cover upload store (docs/inkweld.md). The bytes go
# to the staging bucket through a presigned PUT that media hands out (the gateway holds no storage
# credentials, ADR 0004), then `store_file` moves them into the media bucket and records the file.
FILENAME_PATTERN = r"^[^/\\\x00-\x1f\x7f]{1,255}$"


class ProjectFile(BaseModel):
    """A file stored under the exact name it was uploaded with, byte for byte."""

    project: str
    filename: str = Field(examples=["generated-1754550000000-0.png"])
    content_type: str = Field(examples=["image/png"])
    size_bytes: int
    sha256: str
    uploaded_at: datetime
    uploaded_by: str = Field(description="User id of the uploader")
    media_id: str | None = Field(
        default=None,
        description="The library item with the same bytes (images only): a generated image the "
        "app uploaded back, or the item made for an uploaded image",
    )


class UploadSlotRequest(BaseModel):
    """`media.command.upload_slot`: where to PUT an upload's bytes."""

    project: str = Field(min_length=1, max_length=100)


class UploadSlotReply(BaseModel):
    staging_key: str | None = None
    put_url: str | None = Field(default=None, description="Presigned PUT, short-lived")
    expires_s: int = 0
    error: RemoteError | None = None


class StoreFileCommand(BaseModel):
    """`media.command.store_file`: record a staged upload as a project file.

    With `as_cover` the image is re-encoded as the app's backend does (JPEG inside 1600x2560,
    quality 90), stored as `cover-<ms>.jpg`, the project's previous cover file is removed, and
    `filename` is ignored.
    """

    project: str = Field(min_length=1, max_length=100)
    filename: str | None = Field(default=None, pattern=FILENAME_PATTERN)
    staging_key: str = Field(min_length=1, max_length=300)
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    content_type: str | None = Field(default=None, max_length=200)
    uploaded_by: str = Field(min_length=1, max_length=200)
    as_cover: bool = False


class StoreFileReply(BaseModel):
    file: ProjectFile | None = None
    media: MediaItem | None = Field(default=None, description="The file's library item, if any")
    error: RemoteError | None = None


class ProjectFilesQuery(BaseModel):
    """`media.query.files`: a page of a project's files, by name."""

    project: str
    limit: int = Field(default=500, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class ProjectFilesReply(BaseModel):
    files: list[ProjectFile]
    total: int


class ProjectFileQuery(BaseModel):
    """`media.query.file`: one file by name, with a presigned URL for its bytes."""

    project: str
    filename: str = Field(max_length=255)


class ProjectFileReply(BaseModel):
    file: ProjectFile | None = None
    content_url: str | None = Field(default=None, description="Short-lived presigned URL")


class MarkDeliveredCommand(BaseModel):
    """`media.command.mark_delivered`: these images were handed to the app, which keeps its own
    copy; its sync listing waits for that copy instead of offering them again."""

    project: str
    media_ids: list[str] = Field(max_length=16)


class MarkDeliveredReply(BaseModel):
    marked: int
