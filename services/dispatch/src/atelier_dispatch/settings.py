from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from atelier_settings import BaseServiceSettings, default_database_url


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_DISPATCH_", extra="ignore")

    # No secret of its own, and dispatch never talks to object storage: it must start without
    # (and never be given) the S3 secret.
    secret_fields: ClassVar[tuple[str, ...]] = ()

    port: int = 8083
    database_url: str = Field(default_factory=lambda: default_database_url("dispatch"))
    sweep_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often overdue jobs end, due retries go and waiting tasks are admitted",
    )
    deadline_slack_s: float = Field(
        default=300.0, ge=0, description="Added to a job's profile timeout for queueing time"
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Tries per task for retryable failures (a profile may set "
        "provider_config.max_attempts)",
    )
    retry_base_s: float = Field(default=2.0, gt=0, description="First retry delay; doubles")
    run_startup_hooks: bool = True
