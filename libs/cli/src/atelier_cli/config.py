"""Where the running Atelier is and which tokens to use.

By default everything comes from the `run.json` that `make run` writes (`var/run.json`, or
`$ATELIER_VAR_DIR/run.json`, or the file `--run-file`/`ATELIER_RUN_FILE` names). Each value can
also be given as an environment variable, which wins over the file, so the CLI works against a
deployment that has no run.json:

| variable | run.json key | what |
|---|---|---|
| `ATELIER_URL` | `gateway_url` | the gateway (app API) |
| `ATELIER_TOKEN` | `user_token` | a user's bearer token |
| `ATELIER_PROJECT` | `projects.user` | the project `generate` and `jobs` use |
| `ATELIER_ADMIN_URL` | `admin_url` | the profiles service (admin API) |
| `ATELIER_ADMIN_TOKEN` | `admin_token` | the operator's admin token |
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A run.json is a few kilobytes; anything far larger is not one.
MAX_RUN_FILE_BYTES = 1024 * 1024


class ConfigError(Exception):
    """The CLI cannot tell where Atelier is or how to authenticate; the message says what to do."""


@dataclass(frozen=True)
class Connection:
    gateway_url: str | None
    user_token: str | None
    project: str | None
    admin_url: str | None
    admin_token: str | None
    source: str  # where the values came from, for error messages

    def need_gateway(self) -> tuple[str, str]:
        if not self.gateway_url or not self.user_token:
            raise ConfigError(
                f"No gateway URL and user token ({self.source}). Start Atelier with `make run`, "
                "or set ATELIER_URL and ATELIER_TOKEN."
            )
        return self.gateway_url, self.user_token

    def need_admin(self) -> tuple[str, str]:
        if not self.admin_url or not self.admin_token:
            raise ConfigError(
                f"No admin URL and admin token ({self.source}). Start Atelier with `make run`, "
                "or set ATELIER_ADMIN_URL and ATELIER_ADMIN_TOKEN."
            )
        return self.admin_url, self.admin_token


def default_run_file(env: Mapping[str, str]) -> Path:
    if env.get("ATELIER_RUN_FILE"):
        return Path(env["ATELIER_RUN_FILE"])
    return Path(env.get("ATELIER_VAR_DIR", "var")) / "run.json"


def _read_run_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    if path.stat().st_size > MAX_RUN_FILE_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_RUN_FILE_BYTES} bytes: not a run.json.")
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}).") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} does not hold a JSON object.")
    return loaded


def load_connection(
    run_file: Path | None = None, env: Mapping[str, str] | None = None
) -> Connection:
    env = os.environ if env is None else env
    path = run_file or default_run_file(env)
    values = _read_run_file(path)
    source = f"read {path}" if values else f"{path} not found, environment variables only"
    projects = values.get("projects")
    project = projects.get("user") if isinstance(projects, dict) else None

    def pick(variable: str, value: Any) -> str | None:
        chosen = env.get(variable) or value
        return str(chosen) if chosen else None

    return Connection(
        gateway_url=pick("ATELIER_URL", values.get("gateway_url")),
        user_token=pick("ATELIER_TOKEN", values.get("user_token")),
        project=pick("ATELIER_PROJECT", project),
        admin_url=pick("ATELIER_ADMIN_URL", values.get("admin_url")),
        admin_token=pick("ATELIER_ADMIN_TOKEN", values.get("admin_token")),
        source=source,
    )
