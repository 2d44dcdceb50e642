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
