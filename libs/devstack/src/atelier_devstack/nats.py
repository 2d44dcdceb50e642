"""A nats-server with JetStream, on loopback, for local runs and integration tests."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

from atelier_devstack.binaries import venv_binary
from atelier_devstack.ports import LOOPBACK, free_port, free_ports
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
    # What services are given as ATELIER_NATS_URL: `url`, or every node of a cluster, comma
    # separated (`atelier_messaging.nats_servers`).
    servers: str = ""

    @property
    def service_url(self) -> str:
        return self.servers or self.url


def write_nats_config(
    path: Path,
    *,
    port: int,
    monitor_port: int,
    store_dir: Path,
    server_name: str,
    cluster: str = "",
) -> None:
    # json.dumps quotes the path the way the NATS config syntax expects (it accepts JSON strings).
    path.write_text(
        f"""# Written by atelier_devstack; rewritten at every start.
# A random name: the INFO a client gets on connecting proves the port is served by this process.
server_name: {json.dumps(server_name)}
listen: "{LOOPBACK}:{port}"
http: "{LOOPBACK}:{monitor_port}"
# max_payload stays at NATS's default (1 MB), as in docker-compose.yml and deploy/: pictures and
# large contexts travel by reference (docs/adr/0017-images-by-reference.md).
jetstream {{
  store_dir: {json.dumps(str(store_dir))}
  max_mem: {JETSTREAM_MAX_MEM}
  max_file: {JETSTREAM_MAX_FILE}
}}
{cluster}"""
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


def start_nats_cluster(
    sup: Supervisor, data_dir: Path, size: int = 3, *, timeout: float = 30.0
) -> NatsInfo:
    """`size` nats-servers with JetStream in one cluster on loopback (`nats-1` … `nats-<size>`),
    each with its own store under `data_dir`; return once every node is healthy and JetStream
    has a meta leader. Streams and buckets declared with `size` replicas survive losing a node.

    Every node is started before any is waited for: JetStream needs a quorum to elect its meta
    leader. Restarting a node (`sup.restart("nats-2")`) keeps its ports, routes and store.
    """
    data_dir = data_dir.resolve()
    client_ports = free_ports(size)
    route_ports = free_ports(size)
    monitor_ports = free_ports(size)
    routes = [f"nats-route://{LOOPBACK}:{port}" for port in route_ports]
    names: list[str] = []
    for i in range(size):
        name = f"nats-{i + 1}"
        node_dir = data_dir / name
        node_dir.mkdir(parents=True, exist_ok=True)
        config_path = node_dir / "nats-server.conf"
        write_nats_config(
            config_path,
            port=client_ports[i],
            monitor_port=monitor_ports[i],
            store_dir=node_dir,
            server_name=f"atelier-dev-{name}-{new_instance_id()}",
            cluster=(
                "cluster {\n"
                '  name: "atelier-dev"\n'
                f'  listen: "{LOOPBACK}:{route_ports[i]}"\n'
                f"  routes: {json.dumps([r for j, r in enumerate(routes) if j != i])}\n"
                "}\n"
            ),
        )
        monitor_url = f"http://{LOOPBACK}:{monitor_ports[i]}"

        def healthy(process: ManagedProcess, monitor_url: str = monitor_url) -> None:
            # Without `js-enabled-only`: healthy once this node's JetStream follows a meta
            # leader, i.e. the cluster has a quorum.
            wait_http_ok(f"{monitor_url}/healthz", timeout, process=process)

        sup.start(name, [venv_binary("nats-server"), "-c", config_path], cwd=node_dir)
        # The readiness check runs on every restart; the first time, below, once all are up.
        sup.process(name).ready = healthy
        names.append(name)
    for name in names:
        process = sup.process(name)
        assert process.ready is not None
        process.ready(process)
    urls = [f"nats://{LOOPBACK}:{port}" for port in client_ports]
    return NatsInfo(
        url=urls[0],
        monitor_url=f"http://{LOOPBACK}:{monitor_ports[0]}",
        port=client_ports[0],
        store_dir=data_dir / names[0] / "jetstream",
        servers=",".join(urls),
    )
