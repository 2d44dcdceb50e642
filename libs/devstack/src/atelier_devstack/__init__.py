"""Start and stop the real infrastructure (nats-server, SeaweedFS, PostgreSQL databases).

Used by the one-command local runner and by the integration tests, so both run the same
processes the same way.
"""

from atelier_devstack.nats import NatsInfo, start_nats
from atelier_devstack.ports import free_port, free_ports, pick_port
from atelier_devstack.postgres import throwaway_database
from atelier_devstack.processes import (
    ChildExitedError,
    DevstackError,
    ManagedProcess,
    Supervisor,
    WaitTimeoutError,
    wait_for,
    wait_http_ok,
    wait_tcp,
)
from atelier_devstack.s3 import S3Info, start_seaweed
from atelier_devstack.tokens import mint_user_token

__all__ = [
    "ChildExitedError",
    "DevstackError",
    "ManagedProcess",
    "NatsInfo",
    "S3Info",
    "Supervisor",
    "WaitTimeoutError",
    "free_port",
    "free_ports",
    "mint_user_token",
    "pick_port",
    "start_nats",
    "start_seaweed",
    "throwaway_database",
    "wait_for",
    "wait_http_ok",
    "wait_tcp",
]
