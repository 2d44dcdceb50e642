"""Provider budgets in the admin API: shown, set, removed, refused with a reason (ADR 0020).

The store is a dict here; the JetStream bucket behind it in production is exercised by the
end-to-end test of two worker replicas (tests/e2e/test_budgets_e2e.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from faststream.nats import TestNatsBroker
from profiles_testkit import MemoryBudgetStore

from atelier_contracts.providers import KNOWN_PROVIDERS
from atelier_profiles.main import create_app
from atelier_profiles.settings import Settings

ADMIN_TOKEN = "test-admin-token"
Admin = tuple[httpx.AsyncClient, MemoryBudgetStore]


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    store = MemoryBudgetStore()
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'profiles.db'}",
        admin_token=ADMIN_TOKEN,
        declare_streams=False,
        nats_url="nats://127.0.0.1:1",
    )
    app = create_app(settings, budget_store=store)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://profiles.test",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    async with TestNatsBroker(app.state.broker), app.router.lifespan_context(app), client:
        yield client, store


async def test_set_show_and_remove_a_budget(
    admin: Admin,
) -> None:
    client, store = admin
    listed = await client.get("/admin/v1/provider-budgets")
    assert listed.status_code == 200
    assert [b["provider"] for b in listed.json()] == sorted(KNOWN_PROVIDERS)
    assert all(b["max_concurrent"] is None for b in listed.json())

    put = await client.put("/admin/v1/providers/openai/budget", json={"max_concurrent": 50})
    assert put.status_code == 200, put.text
    assert put.json() == {"provider": "openai", "max_concurrent": 50}
    assert store.budgets == {"openai": 50}
    got = await client.get("/admin/v1/providers/openai/budget")
    assert got.json() == {"provider": "openai", "max_concurrent": 50}

    cleared = await client.put("/admin/v1/providers/openai/budget", json={"max_concurrent": None})
    assert cleared.json()["max_concurrent"] is None and store.budgets == {}
    await client.put("/admin/v1/providers/falai/budget", json={"max_concurrent": 2})
    deleted = await client.delete("/admin/v1/providers/falai/budget")
    assert deleted.status_code == 204 and store.budgets == {}


@pytest.mark.parametrize("body", [{"max_concurrent": 0}, {"max_concurrent": 10_001}, {}])
async def test_a_budget_out_of_range_is_refused(admin: Admin, body: dict[str, object]) -> None:
    client, store = admin
    answer = await client.put("/admin/v1/providers/openai/budget", json=body)
    assert answer.status_code == 422, answer.text
    assert "max_concurrent" in answer.json()["error"]["message"]
    assert store.budgets == {}


async def test_an_unknown_provider_is_404_naming_the_known_ones(
    admin: Admin,
) -> None:
    client, _ = admin
    answer = await client.put("/admin/v1/providers/midjourney/budget", json={"max_concurrent": 5})
    assert answer.status_code == 404
    assert "openai" in answer.json()["error"]["message"]


async def test_nats_down_is_503_and_nothing_changes(
    admin: Admin,
) -> None:
    client, store = admin
    store.down = True
    answer = await client.put("/admin/v1/providers/openai/budget", json={"max_concurrent": 5})
    assert answer.status_code == 503
    assert "try again" in answer.json()["error"]["message"].lower()
    assert (await client.get("/admin/v1/provider-budgets")).status_code == 503


async def test_budgets_need_the_admin_token(
    admin: Admin,
) -> None:
    client, _ = admin
    answer = await client.get("/admin/v1/provider-budgets", headers={"Authorization": "Bearer x"})
    assert answer.status_code == 401
