"""Routes whose dependencies run on the event loop, and the check that finds those that do not."""

from __future__ import annotations

import threading
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI, Query, Request
from fastapi.security import HTTPBearer

from atelier_web.app import create_service_app
from atelier_web.dependencies import on_the_loop, threaded_calls


class Filters:
    def __init__(
        self, request: Request, colour: Annotated[str, Query(max_length=5)] = "red"
    ) -> None:
        self.colour = colour
        self.path = request.url.path
        self.thread = threading.current_thread()


def read_state(request: Request) -> str:
    return str(request.app.state.name)


async def read_state_on_the_loop(request: Request) -> str:
    return str(request.app.state.name)


def _app() -> FastAPI:
    app = FastAPI()
    app.state.name = "atelier"

    @app.get("/built")
    async def built(filters: Annotated[Filters, Depends(on_the_loop(Filters))]) -> dict[str, str]:
        on_loop = filters.thread is threading.main_thread()
        return {"colour": filters.colour, "path": filters.path, "on_loop": str(on_loop)}

    return app


async def test_a_class_built_on_the_loop_gets_its_parameters_and_their_checks() -> None:
    app = _app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ok = await client.get("/built", params={"colour": "blue"})
        assert ok.json() == {"colour": "blue", "path": "/built", "on_loop": "True"}
        assert (await client.get("/built")).json()["colour"] == "red"
        too_long = await client.get("/built", params={"colour": "turquoise"})
        assert too_long.status_code == 422
    assert threaded_calls(app) == []


def test_threaded_calls_names_what_fastapi_would_run_in_a_thread() -> None:
    app = FastAPI()
    bearer = HTTPBearer(auto_error=False)  # an instance with an async __call__: on the loop

    @app.get("/a")
    async def a(
        name: Annotated[str, Depends(read_state)],
        other: Annotated[str, Depends(read_state_on_the_loop)],
        filters: Annotated[Filters, Depends()],
        _: Annotated[object, Depends(bearer)],
    ) -> str:
        return name + other + filters.colour

    @app.post("/b")
    def b() -> str:
        return "sync endpoint"

    found = sorted(threaded_calls(app))
    assert found[:2] == ["GET /a: Filters", "GET /a: read_state"]
    assert len(found) == 3 and found[2].startswith("POST /b: ") and found[2].endswith(".b")


def test_the_service_apps_own_routes_run_on_the_event_loop() -> None:
    # Probes and /metrics are on every service (media, context, dispatch, workers have no others).
    assert threaded_calls(create_service_app("Atelier threads test")) == []
