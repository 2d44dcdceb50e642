"""One way to start a service: every `main.py`'s `cli()` is a call of `run_service`.

It parses the command line (`--help`, `--host`, `--port`, the service's own options and, for a
service with a database, `--migrate-only`), reads the settings, configures logs and traces,
instruments HTTP and serves. Readiness checks are bounded in `create_service_app`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from fastapi import FastAPI

from atelier_settings import BaseServiceSettings
from atelier_telemetry import configure_telemetry, instrument_fastapi
from atelier_web.app import serve

S = TypeVar("S", bound=BaseServiceSettings)


@dataclass(frozen=True)
class Option:
    """A command-line option that overrides one settings field (`--provider openai`)."""

    flag: str
    field: str
    help: str
    type: type = str


HOST_AND_PORT = (
    Option("--host", "host", "interface to listen on (default: the settings' host)"),
    Option("--port", "port", "port to listen on (default: the settings' port)", int),
)


def run_service(
    service: str,
    description: str,
    settings_type: type[S],
    create_app: Callable[[S], FastAPI],
    argv: Sequence[str] | None = None,
    *,
    name: Callable[[S], str] | None = None,
    migrate: Callable[[str], None] | None = None,
    options: Sequence[Option] = (),
    http_message_spans: bool = True,
) -> None:
    """Start the service `atelier-<service>` as its command line says.

    `name` is the service's name in logs and traces when it is not `service` (a worker's names
    its provider). `migrate`, when given, is what `--migrate-only` runs on the settings'
    `database_url`, read with settings that hold no secret but that URL's: a migration job is
    given nothing else. `http_message_spans=False` leaves out the span of every ASGI message
    (long-lived SSE responses)."""
    name_of = name or (lambda _: service)
    parser = argparse.ArgumentParser(
        prog=f"atelier-{service}",
        description=f"{description} Settings come from ATELIER_* environment variables "
        "(see the service's README).",
    )
    every_option = [*HOST_AND_PORT, *options]
    for option in every_option:
        parser.add_argument(option.flag, dest=option.field, type=option.type, help=option.help)
    if migrate is not None:
        parser.add_argument(
            "--migrate-only",
            action="store_true",
            help="bring the database schema to the newest revision and exit (a one-shot job)",
        )
    args = parser.parse_args(argv)

    if migrate is not None and args.migrate_only:
        settings = _without_secrets(settings_type)()
        level, json_logs = settings.log_level, settings.log_json
        configure_telemetry(name_of(settings), level=level, json_logs=json_logs)
        migrate(_database_url(settings))
        return

    settings = settings_type()
    overrides = {
        option.field: getattr(args, option.field)
        for option in every_option
        if getattr(args, option.field) is not None
    }
    if overrides:
        settings = settings.model_copy(update=overrides)
    configure_telemetry(
        name_of(settings),
        level=settings.log_level,
        json_logs=settings.log_json,
        otlp_endpoint=settings.otlp_endpoint,
    )
    app = create_app(settings)
    instrument_fastapi(app, send_receive_spans=http_message_spans)
    serve(app, settings.host, settings.port, settings.log_level)


def _database_url(settings: BaseServiceSettings) -> str:
    url = getattr(settings, "database_url", None)
    if not isinstance(url, str):
        raise TypeError(f"{type(settings).__name__} has no database_url to migrate")
    return url


def _without_secrets(settings_type: type[S]) -> type[S]:
    """The service's settings, no field of them checked as a secret."""
    return type(f"{settings_type.__name__}ForMigrations", (settings_type,), {"secret_fields": ()})
