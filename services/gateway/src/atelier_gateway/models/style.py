"""`PUT /v1/projects/{project}/style`."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from atelier_contracts.style import MAX_STYLE_IMAGES, MAX_STYLE_TEXT


class StyleBody(BaseModel):
    """`PUT /v1/projects/{project}/style`: the whole style, replacing the version named."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(
        default="",
        max_length=MAX_STYLE_TEXT,
        examples=["Muted watercolour, soft light, ink outlines."],
    )
    reference_media_ids: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list,
        max_length=MAX_STYLE_IMAGES,
        description=f"At most {MAX_STYLE_IMAGES} images of this project's media library",
    )
    # Not strict: JSON has one number type, and 3.0 is the integer 3 to every JSON Schema reader.
    version: int = Field(
        ge=0,
        le=2**31,
        description="The version this replaces, as last read (0 for a project without a "
        "style); a write made meanwhile makes this one `409 style_version_stale`",
    )
