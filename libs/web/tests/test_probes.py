"""`/healthz` and `/readyz`: they repeat the instance id a supervisor gave the process."""

from __future__ import annotations

import httpx
import pytest

from atelier_web import INSTANCE_ID_ENV, create_service_app


async def probe(path: str) -> httpx.Response:
    app = create_service_app("Atelier probe test")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path)


async def test_without_an_instance_id_the_probes_answer_as_always(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(INSTANCE_ID_ENV, raising=False)
    assert (await probe("/readyz")).json() == {"ready": True}
    assert (await probe("/healthz")).json() == {"status": "ok"}


async def test_the_probes_name_the_service_and_repeat_its_instance_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(INSTANCE_ID_ENV, "run-nonce-123")
    identity = {"service": "Atelier probe test", "instance": "run-nonce-123"}
    assert (await probe("/readyz")).json() == {"ready": True, **identity}
    assert (await probe("/healthz")).json() == {"status": "ok", **identity}
