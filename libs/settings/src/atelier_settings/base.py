"""Base settings class.

Shared fields are read from `ATELIER_<FIELD>` (one NATS URL for the whole system); each service's
own fields use its prefix `ATELIER_<NAME>_`. Outside `local`, a secret left at its default makes
the service refuse to start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_ONLY_SECRET = "local-dev-only-change-me"


def _shared(name: str) -> AliasChoices:
    return AliasChoices(f"ATELIER_{name}")


def repo_var_dir() -> Path:
    """Where local runs keep their state: `ATELIER_VAR_DIR`, else `./var`."""
    return Path(os.environ.get("ATELIER_VAR_DIR", "var")).resolve()


def default_database_url(service: str) -> str:
    """`DATABASE_URL` when set (PostgreSQL in compose/k8s), else a SQLite file under var/."""
    shared = os.environ.get("DATABASE_URL")
    if shared:
        return shared
    return f"sqlite+aiosqlite:///{repo_var_dir() / f'{service}.db'}"


def database_url_field(service: str) -> Any:
    """A service's `database_url` setting: `default_database_url(service)` unless it is set."""
    return Field(
        default_factory=lambda: default_database_url(service),
        description="SQLAlchemy URL; a SQLite file under var/ unless DATABASE_URL is set",
    )


class BaseServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_file=".env", populate_by_name=True)

    # Fields holding secrets: checked against their local default outside `local`.
    secret_fields: ClassVar[tuple[str, ...]] = ("s3_secret_key",)

    environment: Literal["local", "test", "staging", "production"] = Field(
        default="local", validation_alias=_shared("ENVIRONMENT")
    )
    nats_url: str = Field(default="nats://127.0.0.1:4222", validation_alias=_shared("NATS_URL"))
    stream_replicas: int = Field(default=1, ge=1, le=5, validation_alias=_shared("STREAM_REPLICAS"))
    s3_endpoint: str = Field(default="127.0.0.1:9000", validation_alias=_shared("S3_ENDPOINT"))
    s3_access_key: str = Field(default="atelier", validation_alias=_shared("S3_ACCESS_KEY"))
    s3_secret_key: str = Field(default=LOCAL_ONLY_SECRET, validation_alias=_shared("S3_SECRET_KEY"))
    s3_secure: bool = Field(default=False, validation_alias=_shared("S3_SECURE"))
    s3_region: str = Field(default="us-east-1", validation_alias=_shared("S3_REGION"))
    staging_bucket: str = Field(
        default="atelier-staging", validation_alias=_shared("STAGING_BUCKET")
    )
    media_bucket: str = Field(default="atelier-media", validation_alias=_shared("MEDIA_BUCKET"))
    otlp_endpoint: str | None = Field(default=None, validation_alias=_shared("OTLP_ENDPOINT"))
    log_level: str = Field(default="INFO", validation_alias=_shared("LOG_LEVEL"))
    log_json: bool = Field(default=True, validation_alias=_shared("LOG_JSON"))

    host: str = "127.0.0.1"
    port: int = 8000

    @model_validator(mode="after")
    def _no_default_secrets_outside_local(self) -> BaseServiceSettings:
        if self.environment in ("local", "test"):
            return self
        left = [f for f in self.secret_fields if getattr(self, f) == LOCAL_ONLY_SECRET]
        if left:
            raise ValueError(
                f"refusing to start in {self.environment!r}: set {', '.join(left)} "
                "(they still hold the local development default)"
            )
        return self
