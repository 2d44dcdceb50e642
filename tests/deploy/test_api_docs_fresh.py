"""docs/api/ holds the AsyncAPI and OpenAPI documents the code generates, and every subject."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from atelier_contracts.subjects import Subject

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gen_api_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_api_docs", REPO / "scripts" / "gen_api_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(gen_api_docs: ModuleType) -> dict[Path, str]:
    files: dict[Path, str] = gen_api_docs.render()
    return files


def test_the_api_documents_are_fresh(gen_api_docs: ModuleType, generated: dict[Path, str]) -> None:
    stale = [str(path.relative_to(REPO)) for path in gen_api_docs.stale(generated)]
    assert not stale, f"stale: {stale}; run `uv run python scripts/gen_api_docs.py` (make docs)"


def test_every_subject_is_documented_with_its_payload(generated: dict[Path, str]) -> None:
    addresses: set[str] = set()
    for path, text in generated.items():
        if path.parent.name == "asyncapi":
            document = json.loads(text)
            assert document["asyncapi"].startswith("3.")
            addresses |= {channel["address"] for channel in document["channels"].values()}
            for message in document["components"]["messages"].values():
                assert message["payload"], path.name
    assert {subject.value for subject in Subject} <= addresses


def test_gateway_and_profiles_have_openapi_documents(generated: dict[Path, str]) -> None:
    for service, route in (("gateway", "/v1/generations"), ("profiles", "/admin/v1/profiles")):
        document = json.loads(generated[REPO / "docs" / "api" / "openapi" / f"{service}.json"])
        assert document["openapi"].startswith("3.")
        assert route in document["paths"], service
