"""Free TCP ports on the loopback interface.

This machine already runs services on well-known ports (NATS on 4222, PostgreSQL on 5432), and
tests may run side by side, so nothing we start may assume a fixed port is free.

A port found here is free only at the moment of asking: another process can take it before our
child binds it. The window is small, and readiness is believed only from the process we started
(`processes.wait_http_instance`: the probe's answer repeats the random id the child was given;
nats-server's INFO carries a random server name), so the other server is never taken for ours
nor handed a token. A child that loses the race exits with its own words (`PortTakenError`); the
stack starts it again on another port, and reports the error only if that keeps happening.
"""

from __future__ import annotations

import contextlib
import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port that the kernel considers free on `host` right now."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """`count` distinct free ports.

    All sockets stay bound until every port is chosen; asking for ports one at a time could hand
    out the same port twice once the first socket is closed.
    """
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


def is_port_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server could bind `host:port` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers (nats-server, weed) set SO_REUSEADDR and so may bind over connections lingering
        # in TIME_WAIT; probing the same way avoids calling such a port taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def pick_port(preferred: int, host: str = LOOPBACK) -> tuple[int, bool]:
    """`(preferred, False)` when it is free, else `(some free port, True)`.

    The flag lets a runner tell the developer that e.g. NATS is not on its usual port.
    """
    if is_port_free(preferred, host):
        return preferred, False
    return free_port(host), True
