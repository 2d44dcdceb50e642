from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from atelier_devstack import NatsInfo, Supervisor, start_nats


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsInfo]:
    """A real nats-server with JetStream, one per test module."""
    root: Path = tmp_path_factory.mktemp("nats")
    with Supervisor(root / "logs") as sup:
        yield start_nats(sup, root / "data")
