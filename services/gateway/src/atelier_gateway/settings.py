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
    job_id_secret: str | None = Field(
        default=None,
        repr=False,
        description="HMAC key of job ids (an Idempotency-Key's id cannot be predicted, and the "
        "gateway knows the ids it made for a user); the same on every replica. Unset: the JWT "
        "secret. Must not be the local default outside local",
    )
    jwt_issuer: str = Field(default="atelier", description="Required `iss` claim")
    jwt_audience: str | None = Field(
        default=None, description="Required `aud` claim, when set (tokens with `aud` need it)"
    )
    jwt_leeway_s: float = Field(default=30.0, ge=0, description="Clock skew allowed on `exp`")
    jwks_url: str | None = Field(
        default=None,
        description="JWKS URL of an identity provider: RS/ES/PS tokens are verified against its "
        "keys. With it set, HS256 is accepted only if `jwt_secret` is set too (outside local)",
    )
    jwks_cache_s: float = Field(default=300.0, gt=0, description="How long JWKS keys are kept")
    profile_cache_s: float = Field(
        default=1.0,
        ge=0,
        le=1.0,
        description="How long the profile list and the switch are reused; `profiles.changed` "
        "drops them at once (0: ask profiles every time)",
    )

    query_timeout_s: float = Field(
        default=3.0, gt=0, description="How long to wait for profiles/dispatch/media to answer"
    )
    job_lookup_grace_s: float = Field(
        default=2.0,
        ge=0,
        description="Dispatch records a job a few ms after our 202: how long a not-found job is "
        "asked for again before answering 404 (only ids this gateway made for the asking user: "
        "anyone else's id is asked for once)",
    )
    max_request_bytes: int = Field(
        default=24 * 1024 * 1024,
        gt=0,
        description="Largest request body read (bytes; `Content-Length` checked first, chunked "
        "bodies counted as read): over it, 413 `request_too_large`. The Inkweld facade's file "
        "uploads have their own limit (`ATELIER_GATEWAY_INKWELD_MAX_UPLOAD_BYTES`)",
    )
    max_data_url_bytes: int = Field(
        default=3 * 1024 * 1024,
        gt=0,
        # The API's data_url field takes 5,000,000 characters (ADR 0017: staged, not queued).
        le=3_700_000,
        description="Largest picture an element may send as a `data_url` (decoded bytes): over "
        "it, 422 `reference_image_too_large`",
    )
    context_inline_max_bytes: int = Field(
        default=32 * 1024,
        ge=0,
        le=256 * 1024,
        description="A request's context (its elements, pictures already replaced by keys) "
        "larger than this as JSON is staged and sent by reference (ADR 0017); smaller ones "
        "travel inside `jobs.requested`",
    )
    sse_ping_s: float = Field(default=15.0, gt=0, description="Keep-alive comment interval")
    sse_resync_s: float = Field(
        default=30.0,
        gt=0,
        description="After this long without a status event, a job stream re-reads the job from "
        "dispatch, so an event missed during a NATS reconnect cannot leave it hanging",
    )
    sse_replay_window_s: float = Field(
        default=3600.0,
        gt=0,
        le=24 * 3600,
        description="How far back a project stream resumed with `Last-Event-ID` looks for that "
        "event (a job stream looks through all 24 h the status stream keeps); older ids get the "
        "active jobs first",
    )
    media_connect_timeout_s: float = Field(default=3.0, gt=0)
    media_read_timeout_s: float = Field(default=30.0, gt=0)
    media_cache_max_age_s: int = Field(
        default=3600, ge=0, description="`Cache-Control: private, max-age=` for image bytes"
    )
    openai_wait_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="How long `POST /v1/images/generations` and `/v1/images/edits` wait for "
        "their job before answering 503 `still_running` (the job runs on and lands in the "
        "library)",
    )
    run_startup_hooks: bool = Field(
        default=True, description="Declare streams at start-up (off only in in-memory tests)"
    )

    @property
    def hs256_enabled(self) -> bool:
        """Whether tokens signed with `jwt_secret` are accepted: always, except where a JWKS URL
        is set and the secret was left at its local-only default."""
        return (
            self.jwks_url is None
            or self.environment in ("local", "test")
            or self.jwt_secret != LOCAL_ONLY_SECRET
        )

    @property
    def job_id_key(self) -> str:
        return self.job_id_secret or self.jwt_secret

    @model_validator(mode="after")
    def _no_default_secrets_outside_local(self) -> Self:
        # Replaces the base class's check: with a JWKS URL the JWT secret may stay unset (HS256
        # is then refused, see `hs256_enabled`); every other secret is checked as usual.
        if self.environment in ("local", "test"):
            return self
        left = [
            name
            for name in self.secret_fields
            if getattr(self, name) == LOCAL_ONLY_SECRET
            and not (name == "jwt_secret" and self.jwks_url)
        ]
        if self.job_id_key == LOCAL_ONLY_SECRET:
            # With a JWKS URL the JWT secret may stay at its default; job ids must not.
            left.append("job_id_secret (or jwt_secret)")
        if left:
            raise ValueError(
                f"refusing to start in {self.environment!r}: set {', '.join(left)} "
                "(they still hold the local development default)"
            )
        return self

    @model_validator(mode="after")
    def _strong_jwt_secret_outside_local(self) -> Self:
        # RFC 7518 §3.2: an HS256 key shorter than the hash is guessable offline from one token.
        if (
            self.environment not in ("local", "test")
            and self.hs256_enabled
            and len(self.jwt_secret.encode()) < 32
        ):
            raise ValueError("ATELIER_GATEWAY_JWT_SECRET must be at least 32 bytes long")
        return self
