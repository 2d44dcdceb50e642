"""A finished job's receipt: each image charged or not and why, and the totals (ADR 0024).

Its own module, importing nothing of the other contracts, because two of them carry it: the job
(`jobs.JobView.receipt`) and the audit (`profiles.AuditRecord.receipt`), and `jobs` already
imports `profiles`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

# A receipt has a line per image asked for; a job asks for at most this many.
MAX_RECEIPT_LINES = 100


class ReceiptLine(BaseModel):
    """One image of a finished job on its receipt: charged or not, and why."""

    index: int = Field(ge=0, description="The image's place in the job, from 0")
    charged: bool
    credits: float = Field(ge=0, description="Credits charged for it (0 when not charged)")
    outcome: Literal["landed", "blocked", "failed", "timed_out", "cancelled", "not_made"] = Field(
        description="What became of it: only a landed image is charged"
    )
    reason: str = Field(
        examples=["Not charged: the provider refused this prompt (content_blocked)."]
    )
    media_id: str | None = Field(default=None, description="The landed image")
    error_class: str | None = Field(default=None, examples=["content_blocked"])


class JobReceipt(BaseModel):
    """What a finished job was charged, image by image (ADR 0024). The settlement in profiles
    charges exactly `credits_charged`: each landed image at the price of the profile that made
    it; failed, blocked, timed-out and cancelled images cost nothing."""

    images: list[ReceiptLine] = Field(max_length=MAX_RECEIPT_LINES)
    charged_images: int = Field(ge=0)
    not_charged_images: int = Field(ge=0)
    credits_reserved: float = Field(
        ge=0, description="Held at submission: every image asked for at the profile's price"
    )
    credits_charged: float = Field(ge=0)
    credits_refunded: float = Field(
        ge=0, description="Given back at settlement: reserved minus charged, never below 0"
    )
