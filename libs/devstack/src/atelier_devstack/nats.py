"""A nats-server with JetStream, on loopback, for local runs and integration tests."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

from atelier_devstack.binaries import venv_binary
from atelier_devstack.ports import LOOPBACK, free_port
from atelier_devstack.processes import (
    ManagedProcess,
    NotOurServerError,
    Supervisor,
    new_instance_id,
    wait_for,
    wait_http_ok,
)

# JetStream sizes its limits from the host (a share of RAM and disk) unless told otherwise;
# a dev server has no business reserving that much, and caps make tests behave the same everywhere.
# The file cap must hold the streams' byte limits, which JetStream reserves from it
# (atelier_settings.StreamLimits: 2.3 GiB by default); it is a cap, not space taken up front.
JETSTREAM_MAX_MEM = "256MB"
JETSTREAM_MAX_FILE = "4GB"


@dataclass(frozen=True)
class NatsInfo:
    url: str
    monitor_url: str
    port: int
    store_dir: Path


def write_nats_config(
    path: Path, *, port: int, monitor_port: int, store_dir: Path, server_name: str
) -> None:
    # json.dumps quotes the path the way the NATS config syntax expects (it accepts JSON strings).
    path.write_text(
        f"""# Written by atelier_devstack; rewritten at every start.
# A random name: the INFO a client gets on connecting proves the port is served by this process.
server_name: {json.dumps(server_name)}
listen: "{LOOPBACK}:{port}"
http: "{LOOPBACK}:{monitor_port}"
# A job request may carry element pictures as data URLs (up to 4 of 5 MB); 1 MB, the default,
# would refuse it. Deployments set the same limit (deploy/, docker-compose.yml).
max_payload: 32MB
jetstream {{
  store_dir: {json.dumps(str(store_dir))}
  max_mem: {JETSTREAM_MAX_MEM}
  max_file: {JETSTREAM_MAX_FILE}
}}
"""
    )


def start_nats(
    sup: Supervisor,
    data_dir: Path,
    port: int | None = None,
    *,
    name: str = "nats",
    timeout: float = 10.0,
) -> NatsInfo:
    """Start nats-server under `sup` with JetStream stored in `data_dir`; return once healthy.

    `port=None` picks a free port. A given port is used as is: if it is taken the server fails
    and the error shows its log (use `ports.pick_port` to fall back instead). The monitoring
    port is always picked free. Restarting the process (`sup.restart(name)`) keeps both ports
    and the stored streams.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    client_port = port if port is not None else free_port()
    monitor_port = free_port()
    config_path = data_dir / "nats-server.conf"
    server_name = f"atelier-dev-{new_instance_id()}"
    write_nats_config(
        config_path,
        port=client_port,
        monitor_port=monitor_port,
        store_dir=data_dir,
        server_name=server_name,
    )

    monitor_url = f"http://{LOOPBACK}:{monitor_port}"

    def healthy(process: ManagedProcess) -> None:
        # js-enabled-only: healthy means JetStream is up, not merely that clients can connect.
        wait_http_ok(f"{monitor_url}/healthz?js-enabled-only=true", timeout, process=process)
        # ...and the client port is ours: another process may have taken it after it was found
        # free (nats-server then exits, but its monitor may have answered just before).
        wait_for(
            lambda: nats_server_name(client_port) == server_name or _not_ours(client_port),
            what=f"nats://{LOOPBACK}:{client_port}",
            timeout=timeout,
            process=process,
        )

    sup.start(name, [venv_binary("nats-server"), "-c", config_path], cwd=data_dir, ready=healthy)
    return NatsInfo(
        url=f"nats://{LOOPBACK}:{client_port}",
        monitor_url=monitor_url,
        port=client_port,
        # nats-server keeps its streams in a "jetstream" folder inside the configured store_dir.
        store_dir=data_dir / "jetstream",
    )


def nats_server_name(port: int) -> str | None:
    """The `server_name` in the INFO line a NATS server sends first to every client."""
    with socket.create_connection((LOOPBACK, port), timeout=2.0) as sock:
        line = sock.makefile("rb").readline(64 * 1024)
    if not line.startswith(b"INFO "):
        return None
    name = json.loads(line[5:]).get("server_name")
    return name if isinstance(name, str) else None


def _not_ours(port: int) -> bool:
    raise NotOurServerError(f"port {port} is served by a process other than this run's nats-server")
