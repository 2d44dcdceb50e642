"""The facade's own settings, `ATELIER_GATEWAY_INKWELD_*`.

Kept apart from the gateway's `Settings` so the facade stays one package that can be left out
(docs/adr/0008-inkweld-facade.md); the prefix keeps them with the gateway's.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class InkweldSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_GATEWAY_INKWELD_", extra="ignore")

    generate_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="How long `POST /api/v1/ai/image/generate` waits for its job; a caller may "
        "ask for less with `Prefer: wait=<seconds>`. The job runs on either way",
    )
    provider_aliases: dict[str, str] = Field(
        default_factory=dict,
        description="Atelier providers the app has no name for, shown as one it has, e.g. "
        '`{"gemini": "openrouter"}`. Profiles of other such providers are left out of the facade',
    )
    app_mode: Literal["ONLINE", "LOCAL", "BOTH"] = Field(
        default="ONLINE", description="`appMode` of `GET /api/v1/config/features`"
    )
    max_upload_bytes: int = Field(
        default=50 * 1024 * 1024,
        gt=0,
        description="Largest file the media and cover uploads accept",
    )
    stream_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="How long `POST /api/v1/ai/image/generate-stream` waits for its job before "
        "its `error` event (the app's backend gives up after 300 s too). The job runs on",
    )
    sync_grace_s: float = Field(
        default=600.0,
        ge=0,
        description="An image handed to the app by a synchronous generate is left out of the "
        "media listing this long, waiting for the app to upload its own copy (then listed under "
        "the app's name); after it, it is listed under its media id",
    )
    app_jwt_secrets: list[str] = Field(
        default_factory=list,
        repr=False,
        description="JSON list of the app's own HS256 signing keys (its `DATABASE_KEY`, else "
        "`SESSION_SECRET`; two during a rotation). Set, Atelier accepts the app's tokens",
    )
    app_backend_url: str | None = Field(
        default=None,
        description="The app's backend (e.g. `http://inkweld-backend:8333`), asked about project "
        "access and admins with the writer's token. Unset: a writer owns the projects under "
        "their user name and is never an admin",
    )
    app_timeout_s: float = Field(default=5.0, gt=0, le=60, description="Per call to the app")
    app_cache_s: float = Field(
        default=30.0, ge=0, le=600, description="How long the app's answers are reused"
    )
    app_cache_size: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Most answers kept (oldest dropped)"
    )

    @field_validator("app_jwt_secrets")
    @classmethod
    def _strong_app_secrets(cls, secrets: list[str]) -> list[str]:
        # The app itself refuses a signing secret under 32 characters; a shorter one would let
        # anyone holding one token guess the key offline and sign as any writer.
        if any(len(secret) < 32 for secret in secrets):
            raise ValueError("each of the app's signing keys must be at least 32 characters")
        return secrets
