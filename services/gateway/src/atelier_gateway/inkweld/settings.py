"""The facade's own settings, `ATELIER_GATEWAY_INKWELD_*`.

Kept apart from the gateway's `Settings` so the facade stays one package that can be left out
(docs/adr/0008-inkweld-facade.md); the prefix keeps them with the gateway's.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
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
        description="Largest file the media and cover uploads read (they only recognise images "
        "the project generated)",
    )
