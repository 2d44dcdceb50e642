"""docs/operations.md carries the configuration reference the settings classes describe."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_configuration_reference_is_fresh() -> None:
    spec = importlib.util.spec_from_file_location(
        "settings_reference", REPO / "scripts" / "settings_reference.py"
    )
    assert spec is not None and spec.loader is not None
    reference = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = reference  # its dataclasses look their module up there
    spec.loader.exec_module(reference)
    current = reference.DOC.read_text(encoding="utf-8")
    assert reference.updated(current) == current, (
        "docs/operations.md is stale: run `uv run python scripts/settings_reference.py`"
    )


def test_the_reference_names_every_setting_of_every_service() -> None:
    text = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    for env in (
        "ATELIER_NATS_URL",
        "ATELIER_STREAM_REPLICAS",
        "ATELIER_GATEWAY_JWT_SECRET",
        "ATELIER_PROFILES_ADMIN_TOKEN",
        "ATELIER_WORKERS_PROVIDER",
        "ATELIER_MEDIA_THUMBNAIL_MAX_PX",
        "DATABASE_URL",
    ):
        assert f"| `{env}` |" in text, env
