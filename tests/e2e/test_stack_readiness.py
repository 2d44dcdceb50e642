"""`make run`'s stack when another process takes a service's port between the free-port check and
the bind: the foreign server answers 200 to `/readyz`, and is neither believed nor sent a token;
the service starts again on another port, and the stack gives up only when that keeps happening."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from atelier_devstack import stack as stack_module
from atelier_devstack.processes import PortTakenError
from atelier_devstack.stack import Stack, StackConfig

pytestmark = pytest.mark.e2e


@pytest.fixture
def foreign() -> Iterator[tuple[int, list[tuple[str, str, dict[str, str]]]]]:
    seen: list[tuple[str, str, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            body = json.dumps({"ready": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_port_taken_before_the_bind_moves_the_service_and_the_other_server_gets_no_token(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    foreign: tuple[int, list[tuple[str, str, dict[str, str]]]],
) -> None:
    port, seen = foreign
    pick = Stack._port

    def racing_port(self: Stack, name: str) -> int:
        # As if the foreign server took the profiles port right after it was found free, once.
        if name == "profiles" and name not in self.ports:
            self.ports[name] = port
            return port
        return pick(self, name)

    monkeypatch.setattr(Stack, "_port", racing_port)
    # No worker: what is tested is a service's port, and every process less is seconds of CI.
    config = StackConfig(var_dir=tmp_path / "var", prefer_standard_ports=False, workers=[])
    with Stack(config) as stack:
        assert stack.info is not None
        assert stack.ports["profiles"] != port
        assert "address already in use" in (tmp_path / "var/logs/profiles.log").read_text()
        # The demo profile was seeded through the moved service, with the admin token.
        assert stack.info.public()["profile_id"]

    assert {(method, path) for method, path, _ in seen} == {("GET", "/readyz")}
    assert not any("authorization" in headers for _, _, headers in seen)


def test_a_port_lost_every_time_is_reported_and_nothing_is_left_running(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    foreign: tuple[int, list[tuple[str, str, dict[str, str]]]],
) -> None:
    port, seen = foreign
    pick = Stack._port

    def racing_port(self: Stack, name: str) -> int:
        # Every port the stack tries for profiles is taken.
        if name == "profiles":
            self.ports[name] = port
            return port
        return pick(self, name)

    monkeypatch.setattr(Stack, "_port", racing_port)
    # Two attempts show the giving up as well as three, at one start of profiles less.
    monkeypatch.setattr(stack_module, "PORT_ATTEMPTS", 2)
    stack = Stack(StackConfig(var_dir=tmp_path / "var", prefer_standard_ports=False, workers=[]))

    with pytest.raises(PortTakenError) as caught:
        stack.start()

    assert caught.value.name == "profiles"
    assert caught.value.port == port
    assert "address already in use" in str(caught.value)
    assert stack.info is None
    assert {(method, path) for method, path, _ in seen} == {("GET", "/readyz")}
    assert not any("authorization" in headers for _, _, headers in seen)
    assert not any(stack.supervisor.is_running(name) for name in stack.supervisor.names())
