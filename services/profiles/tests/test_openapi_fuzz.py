"""Schemathesis over the admin API's own OpenAPI document, every check (`--checks all`) but the one
`schemathesis.toml` leaves out for profile writes (rules no JSON Schema can state: a provider's
capabilities, `default_size` among `sizes`, approved origins, the fallback chain): no 5xx, every
answer as documented, schema-valid requests accepted, invalid ones refused.

The app runs for real (uvicorn, a SQLite file, FastStream's in-memory broker) in a thread with its
own event loop; schemathesis calls it over HTTP. Examples per operation are bounded so the run
stays within seconds; raise `ATELIER_FUZZ_EXAMPLES` for a longer hunt.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from faststream.nats import TestNatsBroker
from hypothesis import HealthCheck, settings
from profiles_testkit import MemoryBudgetStore
from schemathesis.config import SchemathesisConfig

from atelier_profiles.main import create_app
from atelier_profiles.settings import Settings

ADMIN = "fuzz-admin-token"
EXAMPLES = int(os.environ.get("ATELIER_FUZZ_EXAMPLES", "25"))


def _settings(database: Path) -> Settings:
    return Settings(
        database_url=f"sqlite+aiosqlite:///{database}",
        admin_token=ADMIN,
        declare_streams=False,
        nats_url="nats://127.0.0.1:1",
    )


# The repository's schemathesis.toml: the one check it leaves out, where, and why.
CONFIG = SchemathesisConfig.from_path(Path(__file__).parents[3] / "schemathesis.toml")
schema = schemathesis.openapi.from_dict(
    create_app(_settings(Path(tempfile.gettempdir()) / "schema-only.db")).openapi(), config=CONFIG
)

# Given to schemathesis as configuration, not per call, so it knows the credentials are there:
# a negative case that drops them is then sent without them.
schema.config.update(headers={"Authorization": f"Bearer {ADMIN}"})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app = create_app(
        _settings(tmp_path_factory.mktemp("fuzz") / "profiles.db"),
        budget_store=MemoryBudgetStore(),
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )

    async def serve() -> None:
        async with TestNatsBroker(app.state.broker):
            await server.serve()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the profiles app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_check_passes(case: schemathesis.Case, base_url: str) -> None:
    case.call_and_validate(
        base_url=base_url,
        timeout=30,
    )
