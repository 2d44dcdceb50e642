"""Write the configuration reference in docs/operations.md from the settings classes.

    uv run python scripts/settings_reference.py          # rewrite the tables between the markers
    uv run python scripts/settings_reference.py --check  # exit 1 when docs/operations.md is stale

Shared settings come from `atelier_settings.BaseServiceSettings` (`ATELIER_<FIELD>`); each service's
own from its `Settings` (`ATELIER_<SERVICE>_<FIELD>`, or the alias a field declares). Nothing is
read from the environment: defaults are the ones in the code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from atelier_settings import BaseServiceSettings, StreamLimits
from atelier_settings.base import LOCAL_ONLY_SECRET

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "operations.md"
START = "<!-- settings-reference:start (scripts/settings_reference.py writes this; do not edit) -->"
END = "<!-- settings-reference:end -->"

HOW_TO_UPDATE = "scripts/settings_reference.py"
SERVICES = ("gateway", "profiles", "context", "dispatch", "media", "workers")

# The shared fields carry no descriptions in the code; these stand in for them.
SHARED_NOTES = {
    "environment": "Outside `local`/`test` a secret left at its development default refuses to "
    "start",
    "nats_url": "NATS server(s); credentials may go in the URL (then keep it in a Secret)",
    "stream_replicas": "JetStream replicas of every stream (3 on a NATS cluster)",
    "s3_endpoint": "S3-compatible storage, `host:port` without scheme",
    "s3_access_key": "Access key of the services' storage account",
    "s3_secret_key": "Secret key of the services' storage account",
    "s3_secure": "HTTPS to the storage endpoint",
    "s3_region": "Region presigned URLs are signed for",
    "staging_bucket": "Transient inputs: uploads and reference images (the gateway and "
    "context write them; workers and media read them). Nothing stays: context sweeps `refs/` "
    "and `previews/`, media `uploads/`",
    "media_bucket": "Originals (workers write generated ones under `generated/`; media's sweep "
    "deletes those no media record names) and thumbnails",
    "otlp_endpoint": "OTLP/HTTP base URL (`/v1/traces` is appended); empty: no trace export",
    "log_level": "Python logging level",
    "log_json": "JSON log lines with trace ids (else plain text)",
}

# Read with os.environ rather than through a settings field.
EXTRA_SHARED = (
    (
        "DATABASE_URL",
        "—",
        "Default database of every service with tables (each service's `*_DATABASE_URL` wins); "
        "without either, a SQLite file under `ATELIER_VAR_DIR`",
    ),
    ("ATELIER_VAR_DIR", "`./var`", "Where local state lives (SQLite files)"),
)


@dataclass(frozen=True)
class Setting:
    env: str
    default: str
    description: str


def _alias(field: FieldInfo) -> str | None:
    alias = field.validation_alias
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        return first if isinstance(first, str) else None
    return None


def _default(name: str, field: FieldInfo, secret: bool) -> str:
    if field.default_factory is not None:
        if name == "database_url":
            return "`DATABASE_URL`, else SQLite under `ATELIER_VAR_DIR`"
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value == LOCAL_ONLY_SECRET:
        return "local-only placeholder"
    if secret and value is None:
        return "—"
    if value is None:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | tuple) and not value:
        return "empty"
    return f"`{value}`"


def _describe(name: str, field: FieldInfo, secret: bool, required_outside_local: bool) -> str:
    parts = [field.description or SHARED_NOTES.get(name, "")]
    literal = _literal_values(field.annotation)
    if literal:
        parts.append("one of " + ", ".join(f"`{v}`" for v in literal))
    if required_outside_local:
        parts.append("**secret; must be set outside `local`/`test`**")
    elif secret:
        parts.append("**secret**")
    text = "; ".join(p.rstrip(".") for p in parts if p)
    return text.replace("|", "\\|").replace("\n", " ")


def _literal_values(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) is not None and str(get_origin(annotation)).endswith("Literal"):
        return get_args(annotation)
    return ()


def _setting(cls: type[BaseServiceSettings], name: str, field: FieldInfo, env: str) -> Setting:
    required = name in cls.secret_fields
    secret = required or field.repr is False
    return Setting(env, _default(name, field, secret), _describe(name, field, secret, required))


def shared_settings() -> list[Setting]:
    rows = []
    for name, field in BaseServiceSettings.model_fields.items():
        env = _alias(field)
        if env is not None:
            rows.append(_setting(BaseServiceSettings, name, field, env))
    rows.extend(Setting(*extra) for extra in EXTRA_SHARED)
    return rows


def stream_settings() -> list[Setting]:
    """The JetStream streams' limits, read by `ensure_streams` in every service declaring them."""
    prefix = str(StreamLimits.model_config.get("env_prefix", ""))
    return [
        Setting(
            f"{prefix}{name}".upper(),
            _default(name, field, False),
            _describe(name, field, False, False),
        )
        for name, field in StreamLimits.model_fields.items()
    ]


def settings_class(service: str) -> type[BaseServiceSettings]:
    module = importlib.import_module(f"atelier_{service}.settings")
    cls: type[BaseServiceSettings] = module.Settings
    return cls


def service_settings(service: str) -> list[Setting]:
    """The service's own settings, and the shared fields it reads under its prefix (host, port)."""
    cls = settings_class(service)
    prefix = str(cls.model_config.get("env_prefix", ""))
    base_fields = BaseServiceSettings.model_fields
    shared = {name for name, field in base_fields.items() if _alias(field) is not None}
    rows = []
    for name, field in cls.model_fields.items():
        if name in shared:
            continue
        env = _alias(field) or f"{prefix}{name}".upper()
        rows.append(_setting(cls, name, field, env))
    return rows


def all_env_names() -> set[str]:
    """Every variable some service reads: what compose and the manifests may set."""
    names = {row.env for row in shared_settings()} | {row.env for row in stream_settings()}
    for service in SERVICES:
        names |= {row.env for row in service_settings(service)}
    return names


def _table(rows: list[Setting]) -> list[str]:
    lines = ["| variable | default | |", "|---|---|---|"]
    lines += [f"| `{r.env}` | {r.default} | {r.description} |" for r in rows]
    return lines


def render() -> str:
    lines = [
        START,
        "",
        "### Shared (every service)",
        "",
        *_table(shared_settings()),
        "",
        "### JetStream streams (every service that declares them)",
        "",
        "Byte limits are reserved from the NATS server's `max_file_store`: their sum must fit in "
        "it. `new` refuses a publish into a full stream (503 `stream_full`), `old` drops the "
        "oldest messages (docs/security.md, Infrastructure limits).",
        "",
        *_table(stream_settings()),
    ]
    for service in SERVICES:
        lines += ["", f"### {service}", "", *_table(service_settings(service))]
    lines += ["", END]
    return "\n".join(lines)


def updated(document: str) -> str:
    try:
        head, rest = document.split(START, 1)
        _, tail = rest.split(END, 1)
    except ValueError:
        raise SystemExit(f"{DOC}: the markers {START!r} and {END!r} are missing") from None
    return head + render() + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the document is stale")
    args = parser.parse_args(argv)
    current = DOC.read_text(encoding="utf-8")
    fresh = updated(current)
    if args.check:
        if fresh != current:
            stale = DOC.relative_to(ROOT)
            print(f"{stale} is stale: run `uv run python {HOW_TO_UPDATE}`", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        DOC.write_text(fresh, encoding="utf-8")
        print(f"wrote the configuration reference into {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
