import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from atelier_settings import BaseServiceSettings


class DemoSettings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_DEMO_", extra="ignore")
    port: int = 8123


def test_shared_fields_use_the_global_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_NATS_URL", "nats://example:4333")
    monkeypatch.setenv("ATELIER_DEMO_PORT", "9001")
    s = DemoSettings()
    assert s.nats_url == "nats://example:4333"
    assert s.port == 9001


def test_refuses_default_secret_outside_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match=r"S3_SECRET_KEY|s3_secret_key"):
        DemoSettings()
    monkeypatch.setenv("ATELIER_S3_SECRET_KEY", "a-real-secret")
    assert DemoSettings().environment == "production"
