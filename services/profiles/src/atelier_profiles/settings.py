"""Settings of the profiles service: `ATELIER_PROFILES_*` (shared ones are `ATELIER_*`)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AfterValidator, AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from atelier_contracts.providers import KNOWN_PROVIDERS
from atelier_security.origins import parse_origin
from atelier_settings import BaseServiceSettings, database_url_field
from atelier_settings.base import LOCAL_ONLY_SECRET

# An origin an operator allows, normalized; one with a path is refused (OriginError).
Origin = Annotated[str, AfterValidator(parse_origin)]


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="ATELIER_PROFILES_", extra="ignore", env_file=".env", populate_by_name=True
    )

    # Outside `local`/`test` these may not keep their defaults. Not the S3 secret: this service
    # never talks to object storage, so it should not need (or be given) it.
    secret_fields: ClassVar[tuple[str, ...]] = (
        "admin_token",
        "credentials_key",
        "credentials_transport_key",
    )

    port: int = 8081
    database_url: str = database_url_field("profiles")
    admin_token: str = Field(
        default=LOCAL_ONLY_SECRET,
        min_length=1,
        description="Bearer token the admin API requires",
    )
    credentials_key: str = Field(
        default=LOCAL_ONLY_SECRET,
        min_length=1,
        repr=False,
        description="Secret the at-rest key for provider credentials is derived from (HKDF); "
        "changing it makes stored keys unreadable, so set them again after a change",
    )
    credentials_transport_key: str = Field(
        default=LOCAL_ONLY_SECRET,
        min_length=1,
        repr=False,
        validation_alias=AliasChoices("ATELIER_CREDENTIALS_TRANSPORT_KEY"),
        description="Shared with the workers: seals provider keys on their way over NATS",
    )
    declare_streams: bool = Field(
        default=True,
        description="Declare the JetStream streams at start-up. Turn off where an init job "
        "declares them, or in tests on FastStream's in-memory broker (no server to declare on).",
    )
    user_max_jobs_in_flight: int | None = Field(
        default=100,
        ge=1,
        description="Most generations one user may have queued or running at once (null: no "
        "limit); more is a 429 naming it",
    )
    user_max_bytes_in_flight: int | None = Field(
        default=96 * 1024 * 1024,
        ge=1,
        description="Most bytes of requests (reference images included) one user may have queued "
        "or running at once, so one user cannot fill the shared job stream (null: no limit)",
    )
    allowed_base_url_origins: dict[str, list[Origin]] = Field(
        default_factory=dict,
        description="Origins (`scheme://host[:port]`) a provider's key may be sent to besides "
        "its own endpoint, for every credential of that provider, including a worker's own "
        "key: JSON, provider name (or `*` for every provider) to origins, e.g. "
        '`{"comfyui": ["http://10.0.0.5:8188"]}`. For self-hosted servers without a stored '
        "key; a stored key's own `allowed_origins` are usually the better place",
    )

    # Webhooks (ADR 0025).
    webhook_retry_schedule_s: list[float] = Field(
        default=[5, 300, 1800, 7200, 18000, 36000, 36000],
        min_length=1,
        max_length=20,
        description="Seconds before each retry of a webhook delivery the endpoint did not "
        "accept (JSON list); the default, Standard Webhooks' own schedule, spans about 27 "
        "hours: 8 attempts over a day",
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, le=60, description="One webhook POST, connection included"
    )
    webhook_allow_list: list[str] = Field(
        default_factory=list,
        description="Addresses or CIDRs webhook endpoints may reach although private or "
        "loopback (JSON list), for every endpoint; one endpoint can also be allowed on its "
        "own (`allow_private_origin`)",
    )
    webhook_max_endpoints: int = Field(
        default=100, ge=1, le=10_000, description="Webhook endpoints that may be registered"
    )

    @field_validator("webhook_retry_schedule_s")
    @classmethod
    def _positive_delays(cls, value: list[float]) -> list[float]:
        if any(delay <= 0 or delay > 86_400 for delay in value):
            raise ValueError("every retry delay must be above 0 and at most 86400 seconds")
        return value

    @field_validator("allowed_base_url_origins")
    @classmethod
    def _providers(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for provider in value:
            if provider != "*" and provider not in KNOWN_PROVIDERS:
                raise ValueError(
                    f"{provider!r} is not a provider; use one of {', '.join(KNOWN_PROVIDERS)} "
                    "or * for every provider"
                )
        return value
