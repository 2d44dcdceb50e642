"""Landed images and their provenance."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

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
