"""docs/contracts/ holds the JSON Schema of every message, committed, so a reader (or another
team's code generator) sees the wire format without running anything; it must not drift from the
models. `make contracts` rewrites it."""

from __future__ import annotations

from pathlib import Path

from atelier_contracts.export import schemas

COMMITTED = Path(__file__).resolve().parents[3] / "docs" / "contracts"


def test_the_committed_schemas_are_the_models() -> None:
    committed = {path.name: path.read_text() for path in COMMITTED.glob("*.schema.json")}
    expected = schemas()
    assert sorted(committed) == sorted(expected), "run `make contracts` and commit docs/contracts/"
    drifted = [name for name, text in expected.items() if committed[name] != text]
    assert not drifted, f"run `make contracts` and commit docs/contracts/: {drifted}"
