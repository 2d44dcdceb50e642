from typing import Annotated, ClassVar

from pydantic import AfterValidator, AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from atelier_security.origins import parse_origin
from atelier_settings import BaseServiceSettings
from atelier_settings.base import LOCAL_ONLY_SECRET

# An origin an operator allows, normalized; one with a path is refused (OriginError).
Origin = Annotated[str, AfterValidator(parse_origin)]


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="ATELIER_WORKERS_", extra="ignore", populate_by_name=True
    )

    secret_fields: ClassVar[tuple[str, ...]] = ("s3_secret_key", "credentials_transport_key")

    port: int = 8090
    provider: str = Field(default="offline", description="Which provider this worker serves")
    concurrency: int = Field(
        default=8,
        ge=1,
        le=10_000,
        description="Provider calls in flight in this process (each is a coroutine waiting on "
        "the provider's HTTP API: thousands are cheap; the provider's own limits are usually "
        "the ones that matter)",
    )
    max_requests_per_minute: float | None = Field(
        default=None,
        gt=0,
        description="This worker's own limit on new provider calls a minute (a token bucket; "
        "each replica has its own); unset: only `concurrency` limits",
    )
    rate_burst: int = Field(
        default=1,
        ge=1,
        description="Provider calls allowed at once before `max_requests_per_minute` spaces them",
    )
    progress_interval_s: float = Field(
        default=1.0, gt=0, description="At most one `gen.progress` event per task this often"
    )
    api_key: str | None = Field(
        default=None,
        repr=False,
        description="The provider's API key (from a Secret); used while no key is stored in "
        "profiles (`/admin/v1/providers/{name}/credentials`) or profiles does not answer",
    )
    allowed_base_url_origins: list[Origin] = Field(
        default_factory=list,
        description="Origins (`scheme://host[:port]`, JSON list) this worker may send a key to "
        "besides the provider's own endpoint, added to those profiles names with the key; for "
        "the worker's own `api_key` while profiles has never answered. Exact origins only",
        examples=[["http://10.0.0.5:7860"]],
    )
    credentials_transport_key: str = Field(
        default=LOCAL_ONLY_SECRET,
        repr=False,
        validation_alias=AliasChoices("ATELIER_CREDENTIALS_TRANSPORT_KEY"),
        description="Shared with profiles: opens the provider key it sends over NATS",
    )
    credentials_max_age_s: float = Field(
        default=300.0,
        gt=0,
        description="Re-ask profiles for the key after this long, even without a change event",
    )
    credentials_query_timeout_s: float = Field(default=2.0, gt=0)
    heartbeat_s: float = Field(
        default=10.0, gt=0, description="In-progress ack interval while a provider call runs"
    )
    ack_wait_s: float = Field(default=30.0, gt=0)
    max_deliver: int = Field(default=5, ge=1)
    run_startup_hooks: bool = True
