"""Fixtures for the context service's tests: image builders, a local HTTP server, SeaweedFS.

With `--import-mode=importlib` test modules cannot import this file, so builders are fixtures.
"""

from __future__ import annotations

import base64
import io
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from atelier_devstack import S3Info, Supervisor, start_seaweed

S3_ACCESS_KEY = "context-tests"
S3_SECRET_KEY = "context-tests-secret"


def _image_bytes(
    width: int = 64, height: int = 48, fmt: str = "PNG", mode: str = "RGB", **save: object
) -> bytes:
    colour: tuple[int, ...] = (200, 40, 40, 128) if mode == "RGBA" else (200, 40, 40)
    image = Image.new(mode, (width, height), colour)
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()


@pytest.fixture
def image_bytes() -> Callable[..., bytes]:
    return _image_bytes


def _claiming_png(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims `width` x `height` pixels (a decompression
    bomb's calling card): the pixel data is for 1x1, so only a header check can judge it."""
    data = bytearray(_image_bytes(1, 1))
    ihdr = data[12:29]  # chunk type + 13 bytes of data
    patched = ihdr[:4] + struct.pack(">II", width, height) + ihdr[12:]
    data[12:29] = patched
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(patched)) & 0xFFFFFFFF)
    return bytes(data)


@pytest.fixture
def claiming_png() -> Callable[[int, int], bytes]:
    return _claiming_png


def _data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


@pytest.fixture
def data_url() -> Callable[..., str]:
    return _data_url


# --- a local web server ----------------------------------------------------------------------


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False  # no Content-Length: the size limit must be enforced while reading
    delay_s: float = 0.0


@pytest.fixture
def route() -> type[Route]:
    return Route


@dataclass
class Seen:
    path: str
    host: str | None


@dataclass
class WebServer:
    port: int
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def web() -> Iterator[WebServer]:
    """An HTTP server on 127.0.0.1 that serves `routes` and records each request's Host."""
    server_state: dict[str, WebServer] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            state = server_state["web"]
            state.seen.append(Seen(self.path, self.headers.get("host")))
            route = state.routes.get(self.path, Route(status=404, body=b"not here"))
            if route.delay_s:
                state.stopped.wait(route.delay_s)
            self.send_response(route.status)
            for name, value in route.headers.items():
                self.send_header(name, value)
            if route.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, len(route.body), 4096):
                    chunk = route.body[start : start + 4096]
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that gave up (size limit, timeout) is what some tests are about

    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state = WebServer(port=httpd.server_address[1])
    server_state["web"] = state
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stopped.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# --- SeaweedFS -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Info]:
    root: Path = tmp_path_factory.mktemp("context-seaweed")
    with Supervisor(root / "logs") as sup:
        yield start_seaweed(sup, root / "data", S3_ACCESS_KEY, S3_SECRET_KEY, ["context-tests"])


class MemoryStyleEntry:
    def __init__(self, value: bytes, revision: int) -> None:
        self.value: bytes | None = value
        self.revision: int | None = revision


class MemoryStyleBucket:
    """The styles' key-value bucket for tests on FastStream's in-memory broker (no JetStream):
    the same get/create/update-with-revision semantics as nats-py's `KeyValue`."""

    def __init__(self) -> None:
        self.entries: dict[str, MemoryStyleEntry] = {}
        self.revision = 0

    async def get(self, key: str) -> MemoryStyleEntry:
        from nats.js.errors import KeyNotFoundError

        if key not in self.entries:
            raise KeyNotFoundError
        return self.entries[key]

    async def create(self, key: str, value: bytes) -> int:
        from nats.js.errors import KeyWrongLastSequenceError

        if key in self.entries:
            raise KeyWrongLastSequenceError
        return self._store(key, value)

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        from nats.js.errors import KeyWrongLastSequenceError

        if key not in self.entries or self.entries[key].revision != last:
            raise KeyWrongLastSequenceError
        return self._store(key, value)

    def _store(self, key: str, value: bytes) -> int:
        self.revision += 1
        self.entries[key] = MemoryStyleEntry(value, self.revision)
        return self.revision


@pytest.fixture
def style_bucket() -> MemoryStyleBucket:
    return MemoryStyleBucket()
