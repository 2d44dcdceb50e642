"""A real nats-server: JetStream works, survives a crash, and stops without leftovers."""

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from atelier_devstack.nats import NatsInfo, nats_server_name, start_nats
from atelier_devstack.ports import is_port_free
from atelier_devstack.processes import ChildExitedError, Supervisor

pytestmark = pytest.mark.integration


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[tuple[Supervisor, NatsInfo]]:
    with Supervisor(tmp_path / "logs") as sup:
        yield sup, start_nats(sup, tmp_path / "nats")


async def publish_and_read_back(url: str, stream: str, payload: bytes) -> bytes:
    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream.lower()}.>"])
        ack = await js.publish(f"{stream.lower()}.hello", payload)
        return (await js.get_msg(stream, ack.seq)).data or b""
    finally:
        await nc.close()


async def test_jetstream_round_trip_on_a_free_port(
    nats_server: tuple[Supervisor, NatsInfo],
) -> None:
    _, info = nats_server

    # 4222 belongs to the machine's own NATS; ours must be elsewhere.
    assert info.port != 4222
    assert info.url == f"nats://127.0.0.1:{info.port}"
    assert await publish_and_read_back(info.url, "DEVSTACK", b"hi") == b"hi"
    assert info.store_dir.is_dir()


async def test_streams_survive_a_kill_and_restart(nats_server: tuple[Supervisor, NatsInfo]) -> None:
    sup, info = nats_server
    await publish_and_read_back(info.url, "DURABLE", b"before crash")

    sup.kill("nats")
    sup.wait_exit("nats")
    sup.restart("nats")  # returns once JetStream is healthy again

    nc = await nats.connect(info.url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        stream = await nc.jetstream().stream_info("DURABLE")
        assert stream.state.messages == 1
    finally:
        await nc.close()


def test_stop_leaves_no_process_and_frees_the_port(tmp_path: Path) -> None:
    with Supervisor(tmp_path / "logs") as sup:
        info = start_nats(sup, tmp_path / "nats")
        process = sup.process("nats")

    assert process.popen.returncode == 0  # a clean exit on SIGTERM, not a SIGKILL
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # the whole process group is gone
    assert is_port_free(info.port)


def test_a_taken_port_fails_with_the_servers_own_words(tmp_path: Path) -> None:
    with socket.socket() as taken, Supervisor(tmp_path / "logs") as sup:
        taken.bind(("127.0.0.1", 0))
        taken.listen()

        with pytest.raises(ChildExitedError, match="address already in use"):
            start_nats(sup, tmp_path / "nats", port=taken.getsockname()[1])


def test_the_client_port_is_proven_ours_by_the_servers_random_name(
    nats_server: tuple[Supervisor, NatsInfo],
) -> None:
    _, info = nats_server
    name = nats_server_name(info.port)
    assert name is not None and name.startswith("atelier-dev-")
    assert f'server_name: "{name}"' in (info.store_dir.parent / "nats-server.conf").read_text()
