"""The real stack, started once per test session for the cross-service tests."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from atelier_devstack.stack import RunInfo, Stack, StackConfig, WorkerSpec
from atelier_fakes import FakeOpenAIState, create_openai_fake, run_fake_in_thread
from atelier_fakes.inkweld_backend import AppProject, AppUser, FakeInkweldBackend
from atelier_fakes.otlp import FakeCollectorState, create_otlp_fake

# The app's own signing key, shared by the fake app backend and the gateway (docs/inkweld.md).
APP_KEY = "e2e-inkweld-database-key-of-32-characters-or-more"


def fake_app_backend() -> FakeInkweldBackend:
    """The app's users and projects for the tests that replay the app beside its backend."""
    return FakeInkweldBackend(
        secret=APP_KEY,
        users={
            "u-writer": AppUser("u-writer", "writer"),
            "u-viewer": AppUser("u-viewer", "viewer"),
            "u-admin": AppUser("u-admin", "boss", is_admin=True),
        },
        projects=[AppProject("writer", "saga", {"viewer": "viewer"})],
    )


@dataclass
class RunningStack:
    stack: Stack
    info: RunInfo
    openai: FakeOpenAIState
    openai_url: str
    collector: FakeCollectorState
    app_backend: FakeInkweldBackend

    def user(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.info.gateway_url,
            headers={"Authorization": f"Bearer {token or self.info.user_token}"},
            timeout=30,
        )

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.info.admin_url,
            headers={"Authorization": f"Bearer {self.info.admin_token}"},
            timeout=30,
        )


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    openai_state = FakeOpenAIState(api_key="sk-e2e-fake-key-1234567890")
    openai_url, stop_fake = run_fake_in_thread(create_openai_fake(openai_state))
    collector = FakeCollectorState()
    collector_url, stop_collector = run_fake_in_thread(create_otlp_fake(collector))
    app_backend = fake_app_backend()
    app_backend_url, stop_app_backend = run_fake_in_thread(app_backend.app())
    var_dir: Path = tmp_path_factory.mktemp("stack")
    stack = Stack(
        StackConfig(
            var_dir=var_dir,
            prefer_standard_ports=False,
            workers=[
                WorkerSpec("offline"),
                WorkerSpec("openai", {"ATELIER_WORKERS_API_KEY": openai_state.api_key}),
                # A second replica: a provider's budget holds across replicas (ADR 0020).
                WorkerSpec("openai", {"ATELIER_WORKERS_API_KEY": openai_state.api_key}, replica=2),
            ],
            database_url=os.environ.get("ATELIER_E2E_DATABASE_URL"),
            # Fast retries and sweeps keep failure-path tests short; the logic is the same.
            extra_env={
                "ATELIER_DISPATCH_RETRY_BASE_S": "0.2",
                "ATELIER_DISPATCH_SWEEP_INTERVAL_S": "0.5",
                # Webhook retries in a second or two instead of a day (ADR 0025).
                "ATELIER_PROFILES_WEBHOOK_RETRY_SCHEDULE_S": "[0.3, 0.6, 1.0]",
                # Every process exports its spans to the fake collector, promptly.
                "ATELIER_OTLP_ENDPOINT": collector_url,
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                # The app's own tokens, its access asked of the fake app backend.
                "ATELIER_GATEWAY_INKWELD_APP_JWT_SECRETS": json.dumps([APP_KEY]),
                "ATELIER_GATEWAY_INKWELD_APP_BACKEND_URL": app_backend_url,
                # The operator's approval for the OpenAI key to go to the fake OpenAI (a
                # loopback origin, refused otherwise: docs/adr/0014).
                "ATELIER_PROFILES_ALLOWED_BASE_URL_ORIGINS": json.dumps({"openai": [openai_url]}),
            },
        )
    )
    try:
        info = stack.start()
        yield RunningStack(stack, info, openai_state, openai_url, collector, app_backend)
    finally:
        stack.stop()
        stop_fake()
        stop_collector()
        stop_app_backend()
