"""Schemathesis over the gateway's own OpenAPI document, every check (`--checks all`): no 5xx, every
answer as documented (status, headers, body), schema-valid requests accepted, invalid ones refused.

The gateway runs for real (uvicorn) in a thread with its own event loop, on FastStream's
in-memory broker with the fake profiles, dispatch and media services of `gateway_testkit`;
schemathesis calls it over HTTP with a token granting project `alpha`. The SSE routes are left
out (a granted project's stream never ends); their errors are covered in test_api.py. Examples
per operation are bounded; raise `ATELIER_FUZZ_EXAMPLES` for a longer hunt.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
import uvicorn
from faststream.nats import TestNatsBroker
from gateway_testkit import (
    ALL_SERVICES,
    World,
    make_job,
    make_media,
    make_token,
    register_fakes,
    storage_app,
    test_settings,
)
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from atelier_gateway.main import create_app

EXAMPLES = int(os.environ.get("ATELIER_FUZZ_EXAMPLES", "25"))
TOKEN = make_token("alice", ["alpha"], expires_in=24 * 3600)

# The repository's schemathesis.toml: the one check it leaves out, where, and why.
CONFIG = SchemathesisConfig.from_path(Path(__file__).parents[3] / "schemathesis.toml")
schema = schemathesis.openapi.from_dict(
    create_app(test_settings()).openapi(), config=CONFIG
).exclude(path_regex=r"/events$")

# Given to schemathesis as configuration, not per call, so it knows the credentials are there:
# a negative case that drops them is then sent without them.
schema.config.update(headers={"Authorization": f"Bearer {TOKEN}"})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = create_app(test_settings(), media_transport=httpx.MockTransport(storage_app))
    world = World()
    world.jobs["job-1"] = make_job("job-1", "alpha")
    world.media["m1"] = make_media("m1", "alpha")
    register_fakes(app.state.broker, world, ALL_SERVICES)
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
            raise RuntimeError("the gateway did not start")
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
