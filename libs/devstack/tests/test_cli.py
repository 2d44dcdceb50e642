"""`atelier-dev run`'s start-up banner, printed without starting anything."""

from __future__ import annotations

import argparse
import time
import types
from pathlib import Path
from typing import Any

import pytest

from atelier_devstack import cli


class FakeStack:
    def __init__(self, config: Any) -> None:
        self.supervisor = types.SimpleNamespace(
            stop_on_exit=lambda: None, log_dir=Path("logs"), names=list, is_running=bool
        )

    def start(self) -> Any:
        return types.SimpleNamespace(
            gateway_url="http://127.0.0.1:18080",
            admin_url="http://127.0.0.1:18081",
            user_token="the-user-token",
            app_admin_token="the-app-admin-token",
            app_project="demo/my-novel",
            profile_id="demo-profile",
            replaced_ports={},
            nats_url="nats://127.0.0.1:14222",
            s3_endpoint="127.0.0.1:18333",
        )

    def stop(self) -> None:
        pass

    def watchdog(self, say: Any) -> Any:
        return types.SimpleNamespace(check=lambda now: None)


def test_the_banner_shows_the_urls_and_how_to_point_the_inkweld_app_at_atelier(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "Stack", FakeStack)
    # Ctrl-C at the first wait (the module's own `time`, so no other thread is affected).
    clock = types.SimpleNamespace(monotonic=time.monotonic, sleep=interrupt)
    monkeypatch.setattr(cli, "time", clock)
    args = argparse.Namespace(command="run", var_dir=tmp_path, fresh=False, worker=["offline"])
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    assert "http://127.0.0.1:18080/#token=the-user-token" in out
    assert "gateway (app API)   http://127.0.0.1:18080" in out
    assert f"tokens and URLs     {(tmp_path / 'run.json').resolve()}" in out
    # The settings the app's frontend talks to Atelier with (issue 18).
    assert "API URL (the app's server URL)  http://127.0.0.1:18080" in out
    assert "bearer token (app admin)        the-app-admin-token" in out
    assert "project                         demo/my-novel" in out
    repo = Path(__file__).resolve().parents[3]
    for path in ("docs/inkweld-deployment.md", "deploy/inkweld/Caddyfile"):
        assert path in out and (repo / path).is_file(), path


def test_the_cluster_asks_for_postgresql_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(cli, "Stack", None)  # never reached
    args = argparse.Namespace(command="cluster", var_dir=tmp_path, fresh=False, worker=["offline"])
    assert cli.run(args) == 2
    assert "set DATABASE_URL" in capsys.readouterr().out
