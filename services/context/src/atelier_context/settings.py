from pydantic import Field
from pydantic_settings import SettingsConfigDict

from atelier_settings import BaseServiceSettings


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_CONTEXT_", extra="ignore")

    port: int = 8082
    max_elements: int = Field(default=4, ge=0, le=16, description="Elements used per job")
    run_startup_hooks: bool = Field(
        default=True, description="Declare streams at start-up (off only in in-memory tests)"
    )
