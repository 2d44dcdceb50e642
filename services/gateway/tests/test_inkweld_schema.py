"""The app's own document drives schemathesis against the facade; and the bundled copy of the
document is the reference one.

The gateway runs for real (uvicorn) in a thread on FastStream's in-memory broker with the fakes
of `inkweld_testkit` (jobs finish at once), called over HTTP with an admin token granting
`alpha`. Every answer must have a status the operation lists, a body fitting its schema, and no
5xx. Examples per operation are bounded; raise `ATELIER_FUZZ_EXAMPLES` for a longer hunt.
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
from gateway_testkit import make_media, storage_app, test_settings
from hypothesis import HealthCheck, settings
from inkweld_testkit import (
    ADMIN_TOKEN,
    SPEC_PATH,
    InkweldWorld,
    openai_profile,
    register_inkweld_fakes,
    spec,
)
from schemathesis import GenerationMode
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from atelier_gateway.main import create_app

EXAMPLES = int(os.environ.get("ATELIER_FUZZ_EXAMPLES", "15"))
REFERENCE = Path(__file__).parents[4] / "shared/reference/inkweld-openapi-imagegen.json"

schema = schemathesis.openapi.from_dict(spec())
schema.config.generation.update(modes=[GenerationMode.POSITIVE])


def test_the_bundled_document_is_the_reference_one() -> None:
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} is not on this machine")
    assert SPEC_PATH.read_bytes() == REFERENCE.read_bytes()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = create_app(test_settings(), media_transport=httpx.MockTransport(storage_app))
    world = InkweldWorld(profiles=[openai_profile()])
    world.media["m1"] = make_media("m1", "alpha")
    register_inkweld_fakes(app.state.broker, world)
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
def test_answers_conform_to_the_apps_document(case: schemathesis.Case, base_url: str) -> None:
    case.call_and_validate(
        base_url=base_url,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
        timeout=30,
    )
