import ipaddress
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from atelier_context.images import PILLOW_PIXEL_CEILING
from atelier_settings import BaseServiceSettings


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_CONTEXT_", extra="ignore")

    port: int = 8082
    max_elements: int = Field(default=4, ge=0, le=16, description="Elements used per job")
    run_startup_hooks: bool = Field(
        default=True,
        description="Declare streams and the staging bucket at start-up (off only in tests)",
    )

    # Reference images: what is accepted, and what is sent.
    reference_max_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1, description="Largest image file accepted, in bytes"
    )
    reference_max_pixels: int = Field(
        default=25_000_000,
        ge=1,
        le=PILLOW_PIXEL_CEILING,
        description="Largest image accepted, in pixels (width x height), checked before decoding",
    )
    reference_max_side: int = Field(
        default=1536, ge=64, le=8192, description="Images are downscaled to fit this many pixels"
    )
    references_budget_s: float = Field(
        default=30.0, gt=0, description="Time for resolving all of one request's images"
    )

    # The SSRF guard for `url` images (see docs/adr/0007-ssrf-guard.md).
    fetch_timeout_s: float = Field(default=10.0, gt=0, description="One URL fetch, redirects in")
    fetch_max_redirects: int = Field(default=3, ge=0, le=10)
    fetch_allow_list: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Addresses or CIDRs that URLs may reach although they are private, loopback "
        "or link-local (comma-separated, e.g. `10.1.2.0/24,127.0.0.1`); plain http is allowed "
        "only to these",
    )

    input_slot_ttl_s: int = Field(
        default=300,
        ge=10,
        le=3600,
        description="How long a presigned PUT URL for a request's staged inputs is valid "
        "(`context.command.input_slots`, ADR 0017)",
    )

    staged_max_age_s: float = Field(
        default=24 * 3600,
        gt=0,
        description="Staged objects (`refs/`, `previews/`) older than this are deleted by the "
        "sweep: what a crash or a request that never became a job left behind (ADR 0017). "
        "Keep it longer than any job lives: 5 profiles of a fallback chain at 3 x 3600 s "
        "plus the deadline slack each is about 15.5 h",
    )
    sweep_interval_s: float = Field(
        default=3600,
        ge=0,
        description="How often the sweep runs (0: never): it deletes stale staged objects, and "
        "those of cancelled jobs whatever their age",
    )

    media_query_timeout_s: float = Field(
        default=3.0, gt=0, description="How long the media service has to answer a lookup"
    )

    @field_validator("fetch_allow_list", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("fetch_allow_list")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # ValueError names the bad entry
        return value
