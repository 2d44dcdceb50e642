"""Governance through every real process: an admin-set provider key reaches the provider and
nothing else (no log, no NATS message, no file of the run holds it); quotas refuse with 429,
refund failed images, and every outcome lands in the audit."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import nats
import pytest

from tests.e2e.jobs import wait_final

if TYPE_CHECKING:
    from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e


@contextmanager
def nats_sniffer(url: str) -> Iterator[list[bytes]]:
    """Every message on the bus (subject, headers and payload) while the block runs."""
    seen: list[bytes] = []
    ready = threading.Event()
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None

    async def sniff() -> None:
        nonlocal stop, loop
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        connection = await nats.connect(url, name="e2e-sniffer")

        async def keep(msg: Any) -> None:
            headers = "".join(f"{k}:{v}" for k, v in (msg.headers or {}).items())
            seen.append(msg.subject.encode() + headers.encode() + msg.data)

        await connection.subscribe(">", cb=keep, pending_msgs_limit=-1, pending_bytes_limit=-1)
        await connection.flush()
        ready.set()
        await stop.wait()
        await connection.flush()
        await connection.drain()

    thread = threading.Thread(target=lambda: asyncio.run(sniff()), daemon=True)
    thread.start()
    assert ready.wait(15), "could not subscribe to NATS"
    try:
        yield seen
    finally:
        assert loop is not None and stop is not None
        time.sleep(0.5)  # let the last replies arrive
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)


def files_holding(root: Path, needle: bytes) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and path.stat().st_size < 200_000_000 and needle in path.read_bytes():
            found.append(path)
    return found


def submit(user: httpx.Client, project: str, profile_id: str, **body: Any) -> httpx.Response:
    return user.post(
        "/v1/generations",
        json={"project": project, "profile_id": profile_id, "prompt": "An owl", **body},
    )


def test_an_admin_key_reaches_the_provider_and_nothing_else(running_stack: RunningStack) -> None:
    key = f"sk-e2e-admin-{secrets.token_hex(16)}"
    fake = running_stack.openai
    env_key = fake.api_key
    # From now on the fake provider accepts only the admin's key: a job that completes proves
    # the worker called with it, not with its own ATELIER_WORKERS_API_KEY.
    fake.api_key = key
    calls_before = len(fake.requests)
    try:
        with nats_sniffer(running_stack.info.nats_url) as traffic, running_stack.admin() as admin:
            put = admin.put("/admin/v1/providers/openai/credentials", json={"api_key": key})
            assert put.status_code == 200, put.text
            assert put.json()["credential_masked"] == f"••••{key[-4:]}"
            listed = admin.get("/admin/v1/providers")
            assert key not in listed.text
            assert {p["name"]: p for p in listed.json()}["openai"]["credential_set"] is True

            created = admin.post(
                "/admin/v1/profiles",
                json={
                    "name": "E2E OpenAI, admin key",
                    "provider": "openai",
                    "model": "gpt-image-1",
                    "sizes": ["1024x1024"],
                    "default_size": "1024x1024",
                    "counts": [1, 2],
                    "base_url": f"{running_stack.openai_url}/v1",
                },
            )
            assert created.status_code == 201, created.text
            profile_id = created.json()["id"]

            with running_stack.user() as user:
                submitted = submit(user, "demo-project", profile_id, count=1)
                assert submitted.status_code == 202, submitted.text
                job = wait_final(user, submitted.json()["id"])
                assert job["status"] == "completed", job
                assert key not in str(job)
                # A provider error that echoes the key must not carry it anywhere either.
                leaky = submit(user, "demo-project", profile_id, prompt="[openai:401-echo-key] x")
                failed = wait_final(user, leaky.json()["id"])
                assert failed["status"] == "failed" and key not in str(failed)

            sent = [r for r in fake.requests[calls_before:] if r.path.endswith("/generations")]
            assert len(sent) == 2
            assert {r.headers["authorization"] for r in sent} == {f"Bearer {key}"}

            audits = admin.get("/admin/v1/audits", params={"profile": profile_id}).json()
            assert {a["job_id"] for a in audits["items"]} == {job["id"], failed["id"]}
            assert key not in str(audits)
    finally:
        with running_stack.admin() as admin:
            admin.delete("/admin/v1/providers/openai/credentials")
        fake.api_key = env_key

    assert traffic, "the sniffer saw no NATS traffic at all"
    assert not [m for m in traffic if key.encode() in m], "the key travelled over NATS"
    log_dir = running_stack.stack.supervisor.log_dir
    assert list(log_dir.glob("*.log")), f"no logs in {log_dir}"
    assert files_holding(log_dir, key.encode()) == []
    # Nor any other file of the run: databases, the JetStream store, object storage.
    assert files_holding(running_stack.stack.var_dir, key.encode()) == []


def wait_used(admin: httpx.Client, user_id: str, expected: float, timeout_s: float = 30) -> None:
    """Settlement runs when the final status event is consumed, a moment after the job ends."""
    deadline = time.monotonic() + timeout_s
    used = None
    while time.monotonic() < deadline:
        used = admin.get(f"/admin/v1/quotas/users/{user_id}").json()["used"]
        if used == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"{user_id} used {used} credits, expected {expected}")


def test_quota_refunds_failed_images_and_then_refuses_with_429(
    running_stack: RunningStack,
) -> None:
    user_id, project = f"quota-user-{secrets.token_hex(4)}", "quota-project"
    token = running_stack.stack.mint_token(user_id, [project])
    with running_stack.admin() as admin, running_stack.user(token) as user:
        created = admin.post(
            "/admin/v1/profiles",
            json={
                "name": f"E2E priced sketch {user_id}",
                "provider": "offline",
                "model": "offline-sketch",
                "sizes": ["256x256"],
                "default_size": "256x256",
                "counts": [1, 2],
                "credit_cost": 1,
            },
        )
        assert created.status_code == 201, created.text
        profile_id = created.json()["id"]
        override = admin.put(f"/admin/v1/quotas/users/{user_id}", json={"credits_per_period": 2})
        assert override.status_code == 200

        # Both images fail: both credits come back once the job ends.
        blocked = submit(user, project, profile_id, count=2, prompt="[fail:content_blocked] x")
        assert blocked.status_code == 202, blocked.text
        assert wait_final(user, blocked.json()["id"])["status"] == "failed"
        wait_used(admin, user_id, 0)

        ok = submit(user, project, profile_id, count=2)
        assert ok.status_code == 202, ok.text
        assert wait_final(user, ok.json()["id"])["status"] == "completed"
        wait_used(admin, user_id, 2)

        refused = submit(user, project, profile_id, count=1)
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["code"] == "quota_exceeded" and error["remaining"] == 0
        assert error["resets_at"] and error["message"]
        assert int(refused.headers["retry-after"]) > 0

        audits = admin.get("/admin/v1/audits", params={"user": user_id}).json()
        by_status = {a["status"]: a for a in audits["items"]}
        assert set(by_status) == {"failed", "completed"}
        assert by_status["failed"]["moderated"] is True and by_status["failed"]["cost"] == 0
        assert by_status["completed"]["cost"] == 2
        summary = admin.get("/admin/v1/audits/summary", params={"user": user_id}).json()
        assert summary["total"] == {"jobs": 2, "images": 2, "cost": 2.0}

        # The admin API is not for user tokens.
        assert user.get(f"{running_stack.info.admin_url}/admin/v1/providers").status_code == 401
