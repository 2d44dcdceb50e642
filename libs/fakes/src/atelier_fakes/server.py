"""Run a fake's ASGI app on a free local port in a background thread, for tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI


def bind_free_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """Bind now and hand the socket to uvicorn, so no other process can take the port between
    choosing it and listening on it (this machine runs other servers)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def make_server(app: FastAPI, log_level: str = "warning") -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        # Requests scripted to hang must not hold up a test's teardown.
        timeout_graceful_shutdown=1,
    )
    return uvicorn.Server(config)


def run_fake_in_thread(
    app: FastAPI, host: str = "127.0.0.1", *, startup_timeout_s: float = 10.0
) -> tuple[str, Callable[[], None]]:
    """Serve `app` on a free port; return its base URL (no trailing slash) and a stop function.

    The stop function is idempotent and waits for the server thread to finish.
    """
    sock = bind_free_socket(host)
    port = sock.getsockname()[1]
    server = make_server(app)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"fake-{port}", daemon=True
    )
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            stop()
            raise RuntimeError(f"fake server on {host}:{port} did not start")
        time.sleep(0.01)
    return f"http://{host}:{port}", stop
