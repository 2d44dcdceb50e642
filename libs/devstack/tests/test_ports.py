import socket

from atelier_devstack.ports import free_port, free_ports, is_port_free, pick_port


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(10)
    assert len(set(ports)) == 10
    assert all(is_port_free(port) for port in ports)


def test_pick_port_keeps_a_free_preferred_port() -> None:
    port = free_port()
    assert pick_port(port) == (port, False)


def test_pick_port_replaces_a_taken_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]

        port, replaced = pick_port(busy)

        assert replaced
        assert port != busy
        assert is_port_free(port)
