"""`/healthz` and `/readyz`: they repeat the instance id a supervisor gave the process."""

from __future__ import annotations

import asyncio

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


async def test_a_hung_or_failing_check_is_not_ready_and_the_probe_still_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("atelier_web.app.READINESS_TIMEOUT_S", 0.05)

    async def hangs() -> bool:
        await asyncio.sleep(60)
        return True

    async def raises() -> bool:
        raise ConnectionError("storage away")

    async def fine() -> bool:
        return True

    for checks, ready in (([fine], True), ([fine, hangs], False), ([raises, fine], False)):
        app = create_service_app("Atelier probe test", readiness=checks)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answer = await asyncio.wait_for(client.get("/readyz"), 5)
        assert (answer.status_code, answer.json()["ready"]) == (200 if ready else 503, ready)
