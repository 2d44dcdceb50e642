"""A project's style: words and reference images every generation of the project follows.

Owned by the context service, which applies it (ADR 0024): kept in a JetStream key-value bucket
(`PROJECT_STYLES_BUCKET`), one key a project, read and written over request/reply
(`context.query.style`, `context.command.style`). Each write makes a new version; a write names
the version it replaces and is refused when another write came first.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from atelier_contracts.profiles import RemoteError
from atelier_contracts.subjects import PROJECT_ID_PATTERN

MAX_STYLE_TEXT = 2000
MAX_STYLE_IMAGES = 4
# `element_id` of a style's reference image where a job or a preview lists its images (their
# `style` flag says so too); a writer's own elements have ids of their app, never this one.
STYLE_ELEMENT_ID = "project-style"


class ProjectStyle(BaseModel):
    """One version of a project's style."""

    project: str = Field(pattern=PROJECT_ID_PATTERN, examples=["my-novel"])
    text: str = Field(
        default="",
        max_length=MAX_STYLE_TEXT,
        description="Style words added to every prompt of the project",
        examples=["Muted watercolour, soft light, ink outlines."],
    )
    reference_media_ids: list[str] = Field(
        default_factory=list,
        max_length=MAX_STYLE_IMAGES,
        description=f"At most {MAX_STYLE_IMAGES} images of the project's media library, sent "
        "as reference images after the elements' own (as far as the profile takes them)",
    )
    version: int = Field(
        default=0, ge=0, description="1 for the first write, one more for each; 0: never set"
    )
    updated_at: datetime | None = None
    updated_by: str | None = Field(default=None, description="User id of the last writer")


class StyleQuery(BaseModel):
    project: str = Field(pattern=PROJECT_ID_PATTERN)


class StyleReply(BaseModel):
    style: ProjectStyle


class StylePutCommand(BaseModel):
    project: str = Field(pattern=PROJECT_ID_PATTERN)
    text: str = Field(default="", max_length=MAX_STYLE_TEXT)
    reference_media_ids: list[str] = Field(default_factory=list, max_length=MAX_STYLE_IMAGES)
    expected_version: int = Field(
        ge=0, description="The version this write replaces (0 for a project without a style)"
    )
    user_id: str = Field(min_length=1, max_length=200)


class StylePutReply(BaseModel):
    style: ProjectStyle | None = Field(default=None, description="The new version")
    error: RemoteError | None = Field(
        default=None, description="A refusal: a stale version, an unknown or foreign image"
    )


class AppliedStyle(BaseModel):
    """Where a project's style went in one assembled prompt: shown on the preview and the job."""

    version: int = Field(description="The style version applied (0: the project has none)")
    applied: bool = Field(description="False when the request left it out or there is none")
    text: str = Field(default="", description="The style words as they appear in the prompt")
    prompt_start: int | None = Field(
        default=None,
        description="Where the style words start in the assembled prompt (a character offset); "
        "null when none went in",
    )
    prompt_end: int | None = Field(default=None, description="Where they end (exclusive)")
    reference_media_ids: list[str] = Field(
        default_factory=list, description="The style's images that were sent, in order"
    )
    note: str | None = Field(default=None, examples=["The project style was left out on request."])
