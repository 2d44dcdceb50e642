"""Readiness is believed only from the process we started: a server that took its port first
(between the free-port check and the child's bind) answers 200 to `/readyz` but is not ours."""

from __future__ import annotations

import json
import re
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from atelier_devstack.ports import LOOPBACK, free_port
from atelier_devstack.processes import (
    INSTANCE_ID_ENV,
    PortTakenError,
    Supervisor,
    WaitTimeoutError,
    new_instance_id,
    wait_http_instance,
)

pytestmark = pytest.mark.integration

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def service_child(port: int) -> list[str]:
    """A service app exactly as every service builds it (atelier_web), served on `port`."""
    code = f"""
        from atelier_web import create_service_app, serve
        serve(create_service_app("Atelier readiness test"), "{LOOPBACK}", {port})
    """
    return [sys.executable, "-c", textwrap.dedent(code)]


@dataclass
class Foreign:
    port: int
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def foreign() -> Iterator[Foreign]:
    """Someone else's server, answering 200 `{"ready": true}` to anything."""
    state = Foreign(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.seen.append((self.path, dict(self.headers)))
            body = json.dumps({"ready": True, "instance": "someone-else"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_the_web_library_repeats_the_id_the_devstack_hands_out() -> None:
    from atelier_web import INSTANCE_ID_ENV as WEB_INSTANCE_ID_ENV

    assert INSTANCE_ID_ENV == WEB_INSTANCE_ID_ENV


def test_our_service_is_ready_when_it_repeats_its_id(tmp_path: Path) -> None:
    port, instance = free_port(), new_instance_id()
    with Supervisor(tmp_path) as sup:
        child = sup.start("svc", service_child(port), env={INSTANCE_ID_ENV: instance})
        wait_http_instance(f"http://{LOOPBACK}:{port}/readyz", instance, 20, process=child)


def test_a_foreign_server_on_the_port_is_not_taken_for_the_service(
    tmp_path: Path, foreign: Foreign
) -> None:
    instance = new_instance_id()
    url = f"http://{LOOPBACK}:{foreign.port}/readyz"
    with Supervisor(tmp_path) as sup:
        child = sup.start("svc", service_child(foreign.port), env={INSTANCE_ID_ENV: instance})
        with pytest.raises(PortTakenError) as caught:
            wait_http_instance(url, instance, 20, process=child)

    message = str(caught.value)
    assert caught.value.port == foreign.port
    assert re.match(rf"svc exited with code \d+ while waiting for port {foreign.port}, ", message)
    assert "another process took" in message
    assert "address already in use" in message  # the child's own words, from its log
    # It was asked whether it is ready, and told nothing: no token, no other request.
    assert foreign.seen, "the probe should have asked"
    assert {path for path, _ in foreign.seen} == {"/readyz"}
    assert not any("authorization" in {h.lower() for h in headers} for _, headers in foreign.seen)


def test_a_foreign_server_is_not_believed_while_our_process_runs_on(
    tmp_path: Path, foreign: Foreign
) -> None:
    """Our process did not serve (yet) and someone else answers: time runs out, saying why."""
    with Supervisor(tmp_path) as sup:
        child = sup.start("svc", SLEEPER)
        with pytest.raises(WaitTimeoutError, match="not the svc started by this run"):
            wait_http_instance(
                f"http://{LOOPBACK}:{foreign.port}/readyz", new_instance_id(), 1, process=child
            )
