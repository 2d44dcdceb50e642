"""NATS `max_payload` stays at its default (1 MB) in every config: pictures and large contexts
travel by reference (docs/adr/0017-images-by-reference.md), so nothing needs more, and raising
it again would let image bytes back onto the bus unnoticed."""

from __future__ import annotations

import re
from pathlib import Path

from atelier_devstack.nats import write_nats_config

REPO = Path(__file__).resolve().parents[2]
_MAX_PAYLOAD = re.compile(r"max[_-]payload", re.IGNORECASE)


def test_the_embedded_server_keeps_the_default(tmp_path: Path) -> None:
    config = tmp_path / "nats.conf"
    write_nats_config(
        config, port=4222, monitor_port=8222, store_dir=tmp_path / "js", server_name="t"
    )
    settings = [line for line in config.read_text().splitlines() if not line.startswith("#")]
    assert not [line for line in settings if _MAX_PAYLOAD.search(line)]


def test_compose_and_kubernetes_keep_the_default() -> None:
    files = [REPO / "docker-compose.yml", *sorted((REPO / "deploy").rglob("*.y*ml"))]
    assert len(files) > 5
    raised = [
        f"{path.relative_to(REPO)}: {line.strip()}"
        for path in files
        for line in path.read_text().splitlines()
        if _MAX_PAYLOAD.search(line) and not line.strip().startswith("#")
    ]
    assert raised == []
