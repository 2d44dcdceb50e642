"""Settings come from ATELIER_MEDIA_* (own) and ATELIER_* (shared); the CLI documents itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from atelier_media.main import cli
from atelier_media.settings import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("ATELIER_VAR_DIR", str(tmp_path))

    settings = Settings()

    assert settings.port == 8084
    assert (settings.thumbnail_max_px, settings.presign_ttl_s) == (256, 300)
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path}/media.db"


def test_own_fields_use_the_media_prefix_and_shared_fields_the_global_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ATELIER_MEDIA_PORT", "9999")
    monkeypatch.setenv("ATELIER_MEDIA_THUMBNAIL_MAX_PX", "512")
    monkeypatch.setenv("ATELIER_MEDIA_PRESIGN_TTL_S", "60")
    monkeypatch.setenv("ATELIER_MEDIA_DATABASE_URL", "postgresql://db/media")
    monkeypatch.setenv("ATELIER_NATS_URL", "nats://nats:4222")
    monkeypatch.setenv("ATELIER_MEDIA_BUCKET", "library")

    settings = Settings()

    assert (settings.port, settings.thumbnail_max_px, settings.presign_ttl_s) == (9999, 512, 60)
    assert settings.database_url == "postgresql://db/media"
    assert (settings.nats_url, settings.media_bucket) == ("nats://nats:4222", "library")


def test_refuses_default_secret_outside_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_ENVIRONMENT", "production")

    with pytest.raises(ValueError, match="s3_secret_key"):
        Settings()


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(["--help"])

    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--host" in out and "--port" in out
