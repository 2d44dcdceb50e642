"""Dead code in the services and libraries (`make lint`), found with vulture.

Every Python file of the repository counts as a user (tests, scripts and benchmarks included), but
only production code is reported: `libs/*/src` and `services/*/src`, the fakes aside (they are
test servers). Unused functions, classes, methods, properties, imports and unreachable code are
reported; unused variables and attributes are not, because vulture cannot see that pydantic and
SQLModel read the fields of a model. What is called by a framework rather than by our code
(routes, subscribers, validators, migrations) is recognised by its decorator or name; the few
protocol methods a library calls are listed in ALLOWED with the reason.

    python scripts/dead_code.py          # exit 1 and a line per finding when there is any
"""

from __future__ import annotations

import sys
from pathlib import Path

from vulture import Vulture

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ["libs", "services", "tests", "scripts", "bench", "conftest.py"]
NOT_SCANNED = ["*/.venv*", "*/node_modules/*", "*/migrations/versions/*"]
REPORTED_TYPES = {"function", "class", "method", "property", "import", "unreachable_code"}

# Called by a framework, named by convention.
FRAMEWORK_DECORATORS = [
    "@*.get",
    "@*.post",
    "@*.put",
    "@*.patch",
    "@*.delete",
    "@*.head",
    "@*.api_route",
    "@*.exception_handler",
    "@*.middleware",
    "@*.on_event",
    "@*.subscriber",
    "@*.publisher",
    "@durable_subscriber",
    "@job_consumer",  # dispatch: durable_subscriber with the settings of its job consumers
    "@*.after_startup",
    "@*.on_startup",
    "@*.command",
    "@*.group",
    "@*.callback",
    "@field_validator",
    "@model_validator",
    "@field_serializer",
    "@model_serializer",
    "@computed_field",
    "@pytest.fixture",
    "@*.fixture",
]
FRAMEWORK_NAMES = ["test_*", "pytest_*", "upgrade", "downgrade", "model_post_init", "__*__"]

# name → why it stays although nothing in this repository calls it by name.
ALLOWED = {
    "consume_scope": "FastStream calls it on every middleware for each message it consumes",
    "connect_unix_socket": "httpcore's network backend interface, which the SSRF guard implements",
}


def findings() -> list[str]:
    vulture = Vulture(
        ignore_names=[*FRAMEWORK_NAMES, *ALLOWED],
        ignore_decorators=FRAMEWORK_DECORATORS,
    )
    vulture.scavenge([str(ROOT / path) for path in SCANNED], exclude=NOT_SCANNED)
    lines = []
    for item in vulture.get_unused_code(min_confidence=60):
        path = Path(item.filename).resolve().relative_to(ROOT)
        production = path.parts[0] in {"libs", "services"} and "src" in path.parts
        if not production or path.parts[:2] == ("libs", "fakes") or item.typ not in REPORTED_TYPES:
            continue
        lines.append(f"{path}:{item.first_lineno}: {item.message}")
    return sorted(lines)


def main() -> int:
    found = findings()
    for line in found:
        print(line)
    if found:
        print(
            f"{len(found)} unused in production code: remove it, or (for a name a library calls) "
            "add it to ALLOWED in scripts/dead_code.py with the reason.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
