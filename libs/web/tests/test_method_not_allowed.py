"""A wrong method gets 405 with `Allow` listing every method the path takes, not one route's."""

from __future__ import annotations

import httpx
from fastapi import APIRouter

from atelier_web import create_service_app


async def test_405_lists_every_method_of_the_path() -> None:
    app = create_service_app("Atelier 405 test")

    @app.get("/things/{thing_id}")
    async def read(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    @app.put("/things/{thing_id}")
    async def replace(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    # Routes of an included router count too (FastAPI keeps them in a branch of their own).
    router = APIRouter()

    @router.delete("/things/{thing_id}")
    async def remove(thing_id: str) -> None:
        return None

    app.include_router(router)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.post("/things/a")
        other_path = await client.options("/healthz")

    assert answer.status_code == 405
    assert answer.headers["allow"] == "DELETE, GET, PUT"
    assert answer.json()["error"]["code"] == "method_not_allowed"
    assert other_path.status_code == 405
    assert other_path.headers["allow"] == "GET"
