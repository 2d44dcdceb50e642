"""`python -m atelier_contracts.export DIR`: one JSON Schema file per message, for readers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from atelier_contracts import generation, jobs, media, profiles

MESSAGES: dict[str, type[BaseModel]] = {
    "jobs.requested": jobs.JobRequested,
    "jobs.enriched": jobs.JobEnriched,
    "jobs.status": jobs.JobStatusChanged,
    "gen.requested": generation.GenerationTask,
    "gen.started": generation.GenerationStarted,
    "gen.completed": generation.GenerationCompleted,
    "gen.failed": generation.GenerationFailed,
    "gen.progress": generation.GenerationProgress,
    "media.landed": media.MediaLanded,
    "media.assigned": media.MediaAssigned,
    "profiles.changed": profiles.ProfilesChanged,
}


def export(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in MESSAGES.items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print("usage: python -m atelier_contracts.export DIR  (writes one JSON Schema per message)")
        raise SystemExit(0 if len(sys.argv) == 2 else 2)
    for p in export(Path(sys.argv[1])):
        print(p)
