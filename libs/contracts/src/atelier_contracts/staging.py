"""Request inputs by reference (the claim check, ADR 0017).

Pictures that arrive in a request (data URLs) and a request's context when its JSON is large are
written by the gateway to the staging bucket; messages carry the object's key, size and digest,
never the bytes. The context service owns those objects: it hands out the presigned PUT URLs
(`context.command.input_slots`), reads them, and deletes them with the job's staged references.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

# At most one slot per element picture (16 elements) plus one for the context itself.
MAX_INPUT_SLOTS = 17


class StagedInput(BaseModel):
    """An object the gateway wrote to the staging bucket for one request.

    Event-only: the public API has no field that takes one, so a user can never name a staging
    key; the context service also reads only keys under the slots it issued for that job.
    """

    key: str = Field(
        max_length=300,
        description="Key in the staging bucket: `refs/<job_id>/in/<n>` for a job, "
        "`previews/<id>/in/<n>` for a preview",
        examples=["refs/9b2c.../in/0"],
    )
    size_bytes: int = Field(ge=0, description="Bytes written, checked when read")
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the bytes, checked when read"
    )
    content_type: str = Field(max_length=200, examples=["image/png", "application/json"])


class InputSlotsRequest(BaseModel):
    """`context.command.input_slots`: presigned PUT URLs for one request's inputs."""

    job_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,100}$",
        description="The job the inputs belong to (slots under `refs/<job_id>/in/`); none for "
        "a preview (slots under a fresh `previews/<id>/in/`)",
    )
    count: int = Field(ge=1, le=MAX_INPUT_SLOTS, description="How many objects")


class InputSlot(BaseModel):
    key: str
    put_url: str = Field(description="Presigned PUT URL of `key`, valid for `expires_s`")


class InputSlotsReply(BaseModel):
    slots: list[InputSlot]
    expires_s: int
