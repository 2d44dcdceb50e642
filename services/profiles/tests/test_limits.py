"""Profile limits (issue 15, items 5 and 8): long lists, huge numbers, deep or secret-holding
`provider_config` and loose booleans are clear 422s, and checking them stays cheap."""

from __future__ import annotations

import time
from typing import Any

import pytest

from .conftest import RunningApp


def body(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Sketch",
        "provider": "offline",
        "model": "offline-sketch",
        "sizes": ["512x512"],
        "default_size": "512x512",
        **overrides,
    }


def nested(depth: int) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for _ in range(depth - 1):
        config = {"a": config}
    return config


async def refused(app: RunningApp, payload: dict[str, Any]) -> str:
    answer = await app.client.post("/admin/v1/profiles", json=payload)
    assert answer.status_code == 422, answer.text
    message: str = answer.json()["error"]["message"]
    return message


async def test_twenty_thousand_sizes_are_refused_at_once(running_app: RunningApp) -> None:
    sizes = [f"{512 + i}x512" for i in range(20_000)]
    started = time.perf_counter()
    message = await refused(running_app, body(sizes=sizes))
    assert time.perf_counter() - started < 1.0
    assert "sizes" in message and "at most 64" in message


async def test_sixty_four_repeated_sizes_are_checked_linearly(running_app: RunningApp) -> None:
    message = await refused(running_app, body(sizes=["512x512"] * 64))
    assert "sizes: listed more than once: 512x512" in message


@pytest.mark.parametrize("sort_order", [2**63, -(2**63), 1_000_000_001])
async def test_sort_order_is_bounded(running_app: RunningApp, sort_order: int) -> None:
    message = await refused(running_app, body(sort_order=sort_order))
    assert "sort_order" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [("enabled", "yes"), ("enabled", 1), ("counts", [True]), ("counts", ["2"])],
)
async def test_booleans_and_counts_are_strict(
    running_app: RunningApp, field: str, value: Any
) -> None:
    message = await refused(running_app, body(**{field: value}))
    assert field in message


async def test_the_switch_takes_only_true_or_false(running_app: RunningApp) -> None:
    for value in ("yes", "true", 1):
        answer = await running_app.client.put("/admin/v1/settings", json={"enabled": value})
        assert answer.status_code == 422, answer.text
    assert (await running_app.client.get("/admin/v1/settings")).json()["enabled"] is True
    answer = await running_app.client.put("/admin/v1/settings", json={"enabled": False})
    assert answer.status_code == 200


async def test_a_patch_is_as_strict(running_app: RunningApp) -> None:
    created = await running_app.client.post("/admin/v1/profiles", json=body())
    profile_id = created.json()["id"]
    for patch in ({"enabled": "no"}, {"sort_order": 2**63}, {"provider_config": nested(300)}):
        answer = await running_app.client.patch(f"/admin/v1/profiles/{profile_id}", json=patch)
        assert answer.status_code == 422, (patch, answer.text)
    stored = (await running_app.client.get(f"/admin/v1/profiles/{profile_id}")).json()
    assert stored["enabled"] is True and stored["sort_order"] == 0


@pytest.mark.parametrize(
    ("config", "limit"),
    [
        (nested(300), "nested more than 10 levels deep"),
        (nested(11), "nested more than 10 levels deep"),
        ({f"k{i}": i for i in range(201)}, "an object with 201 keys, more than 200"),
        ({"workflow": "x" * 70_000}, "more than 64 KB"),
        ({"input": list(range(40_000))}, "larger than 64 KB"),
    ],
)
async def test_provider_config_is_bounded(
    running_app: RunningApp, config: dict[str, Any], limit: str
) -> None:
    message = await refused(running_app, body(provider_config=config))
    assert "provider_config" in message and limit in message


async def test_a_config_within_the_bounds_is_kept(running_app: RunningApp) -> None:
    config = {"workflow": nested(9), "node_map": {f"n{i}": i for i in range(200)}}
    answer = await running_app.client.post("/admin/v1/profiles", json=body(provider_config=config))
    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"api_key": "whatever"}, "provider_config.api_key (its name)"),
        ({"apiKey": "x"}, "provider_config.apiKey"),
        ({"input": {"hf_token": "x"}}, "provider_config.input.hf_token"),
        ({"payload": {"Authorization": "x"}}, "provider_config.payload.Authorization"),
        ({"client_secret": "x"}, "provider_config.client_secret"),
        ({"db_password": "x"}, "provider_config.db_password"),
        ({"note": "sk-proj-0123456789abcdefghij"}, "provider_config.note (its value looks"),
        ({"h": ["Bearer abcdefghijkl"]}, "provider_config.h[0] (its value looks like a key)"),
    ],
)
async def test_provider_config_never_holds_secrets(
    running_app: RunningApp, config: dict[str, Any], where: str
) -> None:
    message = await refused(running_app, body(provider_config=config))
    assert where in message
    assert "PUT /admin/v1/providers/{name}/credentials" in message


async def test_settings_that_only_mention_tokens_are_fine(running_app: RunningApp) -> None:
    config = {"max_tokens": 5, "token_normalization": "none", "client_id": "atelier"}
    answer = await running_app.client.post("/admin/v1/profiles", json=body(provider_config=config))
    assert answer.status_code == 201, answer.text
