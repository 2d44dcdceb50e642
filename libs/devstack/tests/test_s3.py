"""A real SeaweedFS through the MinIO SDK: objects, presigned URLs, clean shutdown."""

import io
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from minio import Minio

from atelier_devstack.ports import is_port_free
from atelier_devstack.processes import Supervisor
from atelier_devstack.s3 import S3Info, start_seaweed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Supervisor, S3Info]]:
    root = tmp_path_factory.mktemp("seaweed")
    with Supervisor(root / "logs") as sup:
        yield (
            sup,
            start_seaweed(sup, root / "data", "devstack", "devstack-secret", ["images", "thumbs"]),
        )


def client_for(info: S3Info) -> Minio:
    return Minio(
        info.endpoint,
        access_key=info.access_key,
        secret_key=info.secret_key,
        secure=False,
        region=info.region,
    )


def test_requested_buckets_exist(seaweed: tuple[Supervisor, S3Info]) -> None:
    client = client_for(seaweed[1])

    assert {bucket.name for bucket in client.list_buckets()} >= {"images", "thumbs"}


def test_put_get_round_trip(seaweed: tuple[Supervisor, S3Info]) -> None:
    client = client_for(seaweed[1])
    body = os.urandom(100_000)

    client.put_object("images", "a/b.bin", io.BytesIO(body), len(body), metadata={"k": "v"})
    response = client.get_object("images", "a/b.bin")
    try:
        assert response.read() == body
    finally:
        response.close()
        response.release_conn()
    metadata = client.stat_object("images", "a/b.bin").metadata
    assert metadata is not None
    assert metadata["x-amz-meta-k"] == "v"


def test_presigned_get_works_and_unsigned_get_is_refused(
    seaweed: tuple[Supervisor, S3Info],
) -> None:
    info = seaweed[1]
    client = client_for(info)
    client.put_object("thumbs", "t.txt", io.BytesIO(b"thumb"), 5)

    url = client.presigned_get_object("thumbs", "t.txt", expires=timedelta(minutes=5))

    assert httpx.get(url, timeout=5).content == b"thumb"
    # Without the signature the same object is private: the presigned URL is what grants access.
    assert httpx.get(f"{info.url}/thumbs/t.txt", timeout=5).status_code == 403


def test_stop_leaves_no_process_ports_or_sockets(tmp_path: Path) -> None:
    with Supervisor(tmp_path / "logs") as sup:
        info = start_seaweed(sup, tmp_path / "data", "k", "secret-key", [])
        process = sup.process("seaweed")
        port = int(info.endpoint.rsplit(":", 1)[1])

    assert process.popen.returncode == 0  # weed mini exits cleanly on SIGTERM
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)
    assert is_port_free(port)
    assert not list(Path("/tmp").glob(f"seaweedfs-*-{port}.sock"))
