"""Settings shared by every service: NATS, object storage, telemetry, environment."""

from atelier_settings.base import BaseServiceSettings, default_database_url, repo_var_dir

__all__ = ["BaseServiceSettings", "default_database_url", "repo_var_dir"]
