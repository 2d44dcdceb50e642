"""Settings shared by every service: NATS, object storage, telemetry, environment."""

from atelier_settings.base import (
    BaseServiceSettings,
    database_url_field,
    default_database_url,
    repo_var_dir,
)
from atelier_settings.streams import StreamLimits

__all__ = [
    "BaseServiceSettings",
    "StreamLimits",
    "database_url_field",
    "default_database_url",
    "repo_var_dir",
]
