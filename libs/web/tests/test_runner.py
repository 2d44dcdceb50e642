"""`run_service`, the one way every service starts: its command line, settings overrides,
telemetry, HTTP instrumentation, and `--migrate-only` with settings that hold no secret."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from fastapi import FastAPI

from atelier_settings import BaseServiceSettings
from atelier_settings.base import LOCAL_ONLY_SECRET
from atelier_web import Option, run_service


class DemoSettings(BaseServiceSettings):
    secret_fields: ClassVar[tuple[str, ...]] = ("s3_secret_key", "api_key")
    api_key: str = LOCAL_ONLY_SECRET
    provider: str = "offline"
    port: int = 8099
    database_url: str = "sqlite+aiosqlite:///demo.db"


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(
        "atelier_web.runner.configure_telemetry",
        lambda name, **kw: seen.setdefault("telemetry", (name, kw)),
    )
    monkeypatch.setattr(
        "atelier_web.runner.instrument_fastapi",
        lambda app, send_receive_spans: seen.setdefault("spans", send_receive_spans),
    )
    monkeypatch.setattr(
        "atelier_web.runner.serve",
        lambda app, host, port, level: seen.setdefault("serve", (host, port)),
    )
    return seen


def run(argv: list[str], seen: dict[str, Any], **kwargs: Any) -> None:
    def create_app(settings: DemoSettings) -> FastAPI:
        seen["settings"] = settings
        return FastAPI()

    run_service(
        "demo",
        "A demo service.",
        DemoSettings,
        create_app,
        argv,
        name=lambda settings: f"demo-{settings.provider}",
        options=[Option("--provider", "provider", "provider to serve")],
        **kwargs,
    )


def test_the_command_line_overrides_the_settings_and_the_service_is_served(
    calls: dict[str, Any],
) -> None:
    run(["--port", "9123", "--provider", "fal"], calls, http_message_spans=False)
    assert calls["serve"] == ("127.0.0.1", 9123)
    assert calls["settings"].provider == "fal"
    assert calls["telemetry"][0] == "demo-fal"
    assert calls["spans"] is False


def test_help_lists_every_option(calls: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run(["--help"], calls, migrate=lambda settings: None)
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    for flag in ("--host", "--port", "--provider", "--migrate-only", "ATELIER_"):
        assert flag in shown
    assert "serve" not in calls


def test_migrate_only_runs_without_the_services_secrets_and_serves_nothing(
    calls: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATELIER_ENVIRONMENT", "production")
    migrated: list[str] = []
    with pytest.raises(ValueError, match="api_key"):
        run([], calls, migrate=migrated.append)  # serving needs every secret set
    run(["--migrate-only"], calls, migrate=migrated.append)
    assert migrated == ["sqlite+aiosqlite:///demo.db"]
    assert "serve" not in calls


def test_without_migrations_there_is_no_migrate_only(calls: dict[str, Any]) -> None:
    with pytest.raises(SystemExit):
        run(["--migrate-only"], calls)
