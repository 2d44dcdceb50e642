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
            profile_id="demo-profile",
            replaced_ports={},
            nats_url="nats://127.0.0.1:14222",
            s3_endpoint="127.0.0.1:18333",
        )

    def stop(self) -> None:
        pass


def test_the_banner_shows_the_urls_and_how_to_point_the_inkweld_app_at_atelier(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "Stack", FakeStack)
    # Ctrl-C at the first wait (the module's own `time`, so no other thread is affected).
    clock = types.SimpleNamespace(monotonic=time.monotonic, sleep=interrupt)
    monkeypatch.setattr(cli, "time", clock)
    args = argparse.Namespace(var_dir=tmp_path, fresh=False, worker=["offline"])
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    assert "http://127.0.0.1:18080/#token=the-user-token" in out
    assert "gateway (app API)   http://127.0.0.1:18080" in out
    assert f"tokens and URLs     {(tmp_path / 'run.json').resolve()}" in out
    assert "Inkweld app, Atelier alone: point the app's API URL at http://127.0.0.1:18080" in out
    repo = Path(__file__).resolve().parents[3]
    for path in ("docs/inkweld-deployment.md", "deploy/inkweld/Caddyfile"):
        assert path in out and (repo / path).is_file(), path
