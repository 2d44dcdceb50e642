"""The bodies of OpenAI's images API, as far as Atelier takes them
(`shared/reference/openai-images-openapi.json`: `CreateImageRequest`, `CreateImageEditRequest`,
`ImagesResponse`, `ErrorResponse`).

Unknown fields are refused, as OpenAI refuses them ("Unrecognized request argument"), so a
misspelt parameter is never silently ignored. Every field is bounded.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from atelier_gateway.models import PROMPT_MAX_LENGTH

# OpenAI's own limit on images per request.
MAX_N = 10
# OpenAI takes up to 16 input images for an edit (as many as a request's context elements).
MAX_EDIT_IMAGES = 16
# OpenAI sets no limit on `user`; Atelier bounds every input.
USER_MAX_LENGTH = 256

ResponseFormat = Literal["url", "b64_json"]


class ImageRequest(BaseModel):
    """What generations and edits share."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(max_length=PROMPT_MAX_LENGTH)
    model: str | None = Field(
        default=None, max_length=200, description="A profile's name or id; none: the first one"
    )
    n: int | None = Field(default=None, ge=1, le=MAX_N)
    size: str | None = Field(default=None, max_length=40, description="`WxH` or `auto`")
    quality: Literal["standard", "hd", "low", "medium", "high", "auto"] | None = None
    response_format: ResponseFormat | None = None
    user: str | None = Field(default=None, max_length=USER_MAX_LENGTH)
    background: Literal["transparent", "opaque", "auto"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    stream: bool | None = None
    partial_images: int | None = Field(default=None, ge=0, le=3)


class ImageGenerationBody(ImageRequest):
    """`POST /v1/images/generations` (JSON): strict, `"2"` and `true` are not numbers."""

    model_config = ConfigDict(extra="forbid", strict=True)

    style: Literal["vivid", "natural"] | None = None
    moderation: Literal["low", "auto"] | None = None


class ImageEditFields(ImageRequest):
    """The text fields of `POST /v1/images/edits` (multipart); the images are its file parts.

    Multipart values are text, so numbers and booleans are read from it here (`"2"` is 2)."""

    input_fidelity: Literal["high", "low"] | None = None


class ImageOut(BaseModel):
    """One image: its bytes (`b64_json`) or where Atelier serves them (`url`, needs the token)."""

    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageOut]
    size: str | None = None
    output_format: Literal["png", "webp", "jpeg"] | None = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail
