"""The one error taxonomy shared by every service (DESIGN.md §3).

`ErrorClass` travels in messages (`ErrorInfo`); `AtelierError` is raised inside services and mapped
to HTTP in one exception handler per app (see `atelier_web`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorClass(StrEnum):
    """Why a generation failed, normalized across providers."""

    INVALID_REQUEST = "invalid_request"
    CONTENT_BLOCKED = "content_blocked"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXHAUSTED = "quota_exhausted"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    TIMEOUT = "timeout"
    AUTH = "auth"
    NO_IMAGE_RETURNED = "no_image_returned"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


# Whether a task that failed with this class may be tried again (A.11 of providers.md).
RETRYABLE: dict[ErrorClass, bool] = {
    ErrorClass.INVALID_REQUEST: False,
    ErrorClass.CONTENT_BLOCKED: False,
    ErrorClass.RATE_LIMITED: True,
    ErrorClass.QUOTA_EXHAUSTED: False,
    ErrorClass.PROVIDER_UNAVAILABLE: True,
    ErrorClass.TIMEOUT: True,
    ErrorClass.AUTH: False,
    ErrorClass.NO_IMAGE_RETURNED: True,
    ErrorClass.CANCELLED: False,
    ErrorClass.INTERNAL: True,
}

# What a writer reads when no more specific message is available.
USER_MESSAGES: dict[ErrorClass, str] = {
    ErrorClass.INVALID_REQUEST: "The image provider rejected the request's settings.",
    ErrorClass.CONTENT_BLOCKED: "The provider refused this prompt or its result.",
    ErrorClass.RATE_LIMITED: "The image provider is busy right now; try again in a moment.",
    ErrorClass.QUOTA_EXHAUSTED: "The image provider account has run out of credit.",
    ErrorClass.PROVIDER_UNAVAILABLE: "The image provider is unavailable right now.",
    ErrorClass.TIMEOUT: "The image took too long to generate.",
    ErrorClass.AUTH: "The image provider refused Atelier's credentials; ask an admin.",
    ErrorClass.NO_IMAGE_RETURNED: "The provider answered without an image.",
    ErrorClass.CANCELLED: "The generation was cancelled.",
    ErrorClass.INTERNAL: "Something went wrong inside Atelier.",
}


class BlockedInput(BaseModel):
    """Which input a content block was about (issue 21): the prompt, or a reference image."""

    kind: Literal["prompt", "reference_image"] = Field(examples=["reference_image"])
    element_id: str | None = Field(
        default=None,
        max_length=200,
        description="For a reference image: the context element whose picture it was",
        examples=["mara-vell"],
    )


class ErrorInfo(BaseModel):
    """A failure as it travels between services and is shown to the user."""

    error_class: ErrorClass = Field(description="Normalized class", examples=["content_blocked"])
    message: str = Field(description="Plain message a writer can act on")
    detail: str | None = Field(
        default=None, description="Provider detail, for admins and the audit; never secrets"
    )
    stage: str | None = Field(
        default=None, description="For content blocks: `input` or `output`", examples=["input"]
    )
    retry_after_s: float | None = Field(
        default=None, description="Provider's retry hint in seconds, when it gave one"
    )
    category: str | None = Field(
        default=None,
        max_length=200,
        description="For content blocks: the provider's own category words, lowercased and "
        "comma-separated, when its API names them (docs/providers.md, 'Moderation detail')",
        examples=["violence"],
    )
    input: BlockedInput | None = Field(
        default=None,
        description="For input-stage content blocks: which input was refused, when known (the "
        "provider names it, or the call carried the prompt alone)",
    )

    @property
    def retryable(self) -> bool:
        return RETRYABLE[self.error_class]

    @classmethod
    def of(cls, error_class: ErrorClass, detail: str | None = None) -> ErrorInfo:
        return cls(error_class=error_class, message=USER_MESSAGES[error_class], detail=detail)


class AtelierError(Exception):
    """An error with a stable slug, an HTTP status and a message a person can act on.

    A kind of error states its status and slug where it is declared:
    `class UploadMissing(NotFound, code="upload_missing")`; one raise may still override them.
    """

    status_code: int = 400
    code: str = "bad_request"

    def __init_subclass__(
        cls, *, status_code: int | None = None, code: str | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if status_code is not None:
            cls.status_code = status_code
        if code is not None:
            cls.code = code

    def __init__(self, message: str, *, code: str | None = None, status_code: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code


class InvalidInput(AtelierError, status_code=422, code="invalid_input"): ...


class NotFound(AtelierError, status_code=404, code="not_found"): ...


class Unauthorized(AtelierError, status_code=401, code="unauthorized"): ...


class Forbidden(AtelierError, status_code=403, code="forbidden"): ...


class Conflict(AtelierError, status_code=409, code="conflict"): ...


class Unavailable(AtelierError, status_code=503, code="unavailable"): ...
