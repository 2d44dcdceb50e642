"""`python -m atelier_contracts.export DIR`: one JSON Schema file per message, for readers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from atelier_contracts.registry import event_models

# Every event and notice, by its `type`: derived from the subject registry.
MESSAGES: dict[str, type[BaseModel]] = event_models()


def schemas() -> dict[str, str]:
    """File name → the JSON Schema text of every message."""
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(), indent=2) + "\n"
        for name, model in MESSAGES.items()
    }


def export(directory: Path) -> list[Path]:
    """Write every message's schema into `directory` and remove those of messages that are gone
    (docs/contracts/ is committed; a test fails when it drifts from the models)."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = schemas()
    for stale in directory.glob("*.schema.json"):
        if stale.name not in wanted:
            stale.unlink()
    written = []
    for name, text in wanted.items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print("usage: python -m atelier_contracts.export DIR  (writes one JSON Schema per message)")
        raise SystemExit(0 if len(sys.argv) == 2 else 2)
    for p in export(Path(sys.argv[1])):
        print(p)
