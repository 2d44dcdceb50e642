"""Media's settings: `ATELIER_MEDIA_*`, on top of the shared `ATELIER_*` fields."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from atelier_settings import BaseServiceSettings, database_url_field


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_MEDIA_", extra="ignore")

    port: int = 8084
    database_url: str = database_url_field("media")
    thumbnail_max_px: int = Field(
        default=256, ge=16, le=4096, description="Longest side of a thumbnail, in pixels"
    )
    presign_ttl_s: int = Field(
        default=300, ge=1, le=7 * 24 * 3600, description="Lifetime of presigned GET URLs"
    )
    # Project files (the app's media sync and covers, atelier_media.files).
    upload_slot_ttl_s: int = Field(
        default=300, ge=10, le=24 * 3600, description="Lifetime of an upload's presigned PUT URL"
    )
    upload_max_bytes: int = Field(
        default=50 * 1024 * 1024,
        ge=1,
        description="Largest upload stored as a project file (keep at least the gateway's bound)",
    )
    project_max_files: int = Field(
        default=10_000, ge=1, description="Most files one project may hold"
    )
    project_max_bytes: int = Field(
        default=5 * 1024**3, ge=1, description="Most bytes one project's files may add up to"
    )
    # The sweep of what nobody will land or store (atelier_media.sweep).
    sweep_interval_s: float = Field(
        default=3600,
        ge=0,
        description="How often the sweep of unlanded generated images and abandoned uploads "
        "runs (0: never); each sweep lists all of `generated/` (one LIST and one SELECT per "
        "1,000 objects)",
    )
    unlanded_max_age_s: float = Field(
        default=24 * 3600,
        gt=0,
        description="Generated images (`generated/`) no media record names, and staged uploads "
        "(`uploads/`) never stored, are deleted once older than this. Keep it well above a "
        "job's life (about 15.5 h at most) and a landing's retries: a younger one may still land",
    )
    # Off in handler tests on the in-memory broker: declaring streams needs a real nats-server.
    run_startup_hooks: bool = True
