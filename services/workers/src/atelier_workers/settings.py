from pydantic import Field
from pydantic_settings import SettingsConfigDict

from atelier_settings import BaseServiceSettings


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_WORKERS_", extra="ignore")

    port: int = 8090
    provider: str = Field(default="offline", description="Which provider this worker serves")
    concurrency: int = Field(default=8, ge=1, le=512, description="Provider calls in flight")
    api_key: str | None = Field(
        default=None, repr=False, description="The provider's API key (from a Secret)"
    )
    heartbeat_s: float = Field(
        default=10.0, gt=0, description="In-progress ack interval while a provider call runs"
    )
    ack_wait_s: float = Field(default=30.0, gt=0)
    max_deliver: int = Field(default=5, ge=1)
    run_startup_hooks: bool = True
