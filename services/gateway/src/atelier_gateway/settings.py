"""The gateway's settings: `ATELIER_GATEWAY_*` (shared ones such as the NATS URL: `ATELIER_*`)."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from atelier_settings import BaseServiceSettings
from atelier_settings.base import LOCAL_ONLY_SECRET


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_GATEWAY_", extra="ignore")

    # The gateway never talks to object storage itself (it streams media through presigned URLs
    # the media service hands out), so it must not need the S3 secret to start: least privilege.
    secret_fields: ClassVar[tuple[str, ...]] = ("jwt_secret",)

    port: int = 8080

    jwt_secret: str = Field(
        default=LOCAL_ONLY_SECRET, description="HS256 key that signs user tokens", repr=False
    )
    jwt_issuer: str = Field(default="atelier", description="Required `iss` claim")
    jwt_audience: str | None = Field(
        default=None, description="Required `aud` claim, when set (tokens with `aud` need it)"
    )
    jwt_leeway_s: float = Field(default=30.0, ge=0, description="Clock skew allowed on `exp`")

    query_timeout_s: float = Field(
        default=3.0, gt=0, description="How long to wait for profiles/dispatch/media to answer"
    )
    job_lookup_grace_s: float = Field(
        default=2.0,
        ge=0,
        description="Dispatch records a job a few ms after our 202: how long a not-found job is "
        "asked for again before answering 404",
    )
    sse_ping_s: float = Field(default=15.0, gt=0, description="Keep-alive comment interval")
    sse_resync_s: float = Field(
        default=30.0,
        gt=0,
        description="After this long without a status event, a job stream re-reads the job from "
        "dispatch, so an event missed during a NATS reconnect cannot leave it hanging",
    )
    media_connect_timeout_s: float = Field(default=3.0, gt=0)
    media_read_timeout_s: float = Field(default=30.0, gt=0)
    media_cache_max_age_s: int = Field(
        default=3600, ge=0, description="`Cache-Control: private, max-age=` for image bytes"
    )
    run_startup_hooks: bool = Field(
        default=True, description="Declare streams at start-up (off only in in-memory tests)"
    )

    @model_validator(mode="after")
    def _strong_jwt_secret_outside_local(self) -> Self:
        # RFC 7518 §3.2: an HS256 key shorter than the hash is guessable offline from one token.
        if self.environment not in ("local", "test") and len(self.jwt_secret.encode()) < 32:
            raise ValueError("ATELIER_GATEWAY_JWT_SECRET must be at least 32 bytes long")
        return self
