"""The whole system on one machine: NATS, SeaweedFS and every service as its own process.

Used by `atelier-dev run` (the README's first command) and by the end-to-end tests, so both run
exactly the same processes. Services are started as `python -m atelier_<name>`: this library
never imports a service.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from atelier_devstack.nats import NatsInfo, start_nats, start_nats_cluster
from atelier_devstack.ports import free_port, pick_port
from atelier_devstack.processes import (
    INSTANCE_ID_ENV,
    PortTakenError,
    Supervisor,
    new_instance_id,
    wait_http_instance,
)
from atelier_devstack.s3 import S3Info, start_seaweed
from atelier_devstack.tokens import mint_app_admin_token, mint_user_token
from atelier_devstack.watchdog import RestartPolicy, Watchdog

STAGING_BUCKET = "atelier-staging"
MEDIA_BUCKET = "atelier-media"
# Starts of one service before a port lost to another process is reported as an error.
PORT_ATTEMPTS = 3

# Preferred ports for a local run; any taken one is replaced by a free one (and reported).
PREFERRED_PORTS = {
    "nats": 4222,
    "s3": 8333,
    "gateway": 8080,
    "profiles": 8081,
    "context": 8082,
    "dispatch": 8083,
    "media": 8084,
    "worker-offline": 8090,
}

# The app (Inkweld) has no name for the offline provider, so its routes would hide the demo
# profile; the embedded default shows it as the app's `stable-diffusion` (a local, keyless
# provider there too). ADR 0022.
APP_PROVIDER_ALIASES = {"offline": "stable-diffusion"}
# The app names a project `username/slug` (the Atelier project `username__slug`): the demo one.
APP_USER = "demo"
APP_PROJECT = "demo/my-novel"

DEMO_PROFILE: dict[str, Any] = {
    "name": "Sketch (offline)",
    "provider": "offline",
    "model": "offline-sketch",
    "enabled": True,
    "sizes": ["256x256", "512x512", "768x768", "1024x1024", "1024x1536", "1536x1024"],
    "default_size": "512x512",
    "counts": [1, 2, 4],
    "options": [
        {
            "name": "seed",
            "kind": "integer",
            "minimum": 0,
            "maximum": 2147483647,
            "description": "Same prompt and seed give the same image",
        },
        {
            "name": "negative_prompt",
            "kind": "string",
            "max_length": 1000,
            "description": "What the image should not show",
        },
        {
            "name": "delay_s",
            "kind": "number",
            "minimum": 0,
            "maximum": 60,
            "default": 0,
            "description": "Pretend the provider takes this long (for trying progress and cancel)",
        },
    ],
    # The offline provider draws up to 4 reference images into the picture (ADR 0022), so an
    # element's picture visibly reaches the "model" without any provider key.
    "max_reference_images": 4,
    "prompt_max_length": 4000,
    "timeout_s": 120,
    "sort_order": 0,
    "credit_cost": 0,
}


@dataclass(frozen=True)
class WorkerSpec:
    provider: str
    env: dict[str, str] = field(default_factory=dict)
    # A second (third…) process of the same provider's workers: `worker-<provider>-<replica>`.
    replica: int = 1

    @property
    def name(self) -> str:
        suffix = "" if self.replica == 1 else f"-{self.replica}"
        return f"worker-{self.provider}{suffix}"


@dataclass
class StackConfig:
    var_dir: Path
    prefer_standard_ports: bool = True
    workers: list[WorkerSpec] = field(default_factory=lambda: [WorkerSpec("offline")])
    database_url: str | None = None  # shared PostgreSQL; None → one SQLite file per service
    extra_env: dict[str, str] = field(default_factory=dict)
    seed_demo_profile: bool = True
    # Atelier providers shown to the app's routes under one of its names (the gateway's
    # `ATELIER_GATEWAY_INKWELD_PROVIDER_ALIASES`; `extra_env` may still override it).
    app_provider_aliases: dict[str, str] = field(default_factory=lambda: dict(APP_PROVIDER_ALIASES))
    json_logs: bool = True
    # A cluster (`atelier-dev cluster`): this many nats-server nodes, streams and buckets with as
    # many replicas (at most 3, as in deploy/), and this many processes of every service.
    nats_nodes: int = 1
    service_replicas: int = 1


@dataclass
class RunInfo:
    gateway_url: str
    admin_url: str
    user_token: str
    admin_token: str
    second_user_token: str
    # For the app's frontend (Inkweld): a token with the admin role, granting APP_PROJECT.
    app_admin_token: str
    app_project: str
    nats_url: str
    s3_endpoint: str
    projects: dict[str, str]
    profile_id: str | None
    replaced_ports: dict[str, tuple[int, int]]

    def public(self) -> dict[str, Any]:
        return {
            "gateway_url": self.gateway_url,
            "admin_url": self.admin_url,
            "user_token": self.user_token,
            "admin_token": self.admin_token,
            "second_user_token": self.second_user_token,
            "app_admin_token": self.app_admin_token,
            "app_project": self.app_project,
            "nats_url": self.nats_url,
            "s3_endpoint": self.s3_endpoint,
            "projects": self.projects,
            "profile_id": self.profile_id,
        }


def _local_secrets(var_dir: Path) -> dict[str, str]:
    """Random secrets made once per var/ directory, so a local run never uses a known default."""
    path = var_dir / "secrets.json"
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    values = {
        "jwt_secret": secrets.token_urlsafe(32),
        "admin_token": secrets.token_urlsafe(24),
        "s3_access_key": "atelier",
        "s3_secret_key": secrets.token_urlsafe(24),
    }
    path.write_text(json.dumps(values, indent=2))
    path.chmod(0o600)
    return values


class Stack:
    SERVICES = ("profiles", "context", "dispatch", "media", "gateway")

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.var_dir = config.var_dir.resolve()
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.supervisor = Supervisor(log_dir=self.var_dir / "logs")
        self.secrets = _local_secrets(self.var_dir)
        self.ports: dict[str, int] = {}
        # Each service process's id, repeated by its probes: readiness (and so any token) only
        # from the process we started, never from whoever else holds the port.
        self.instances: dict[str, str] = {}
        # How each service was started (module, extra env), to start it again on another port.
        self._launches: dict[str, tuple[str, dict[str, str], str]] = {}
        self.replaced: dict[str, tuple[int, int]] = {}
        self.nats: NatsInfo | None = None
        self.s3: S3Info | None = None
        self.info: RunInfo | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def _port(self, name: str) -> int:
        preferred = PREFERRED_PORTS.get(name) if self.config.prefer_standard_ports else None
        if preferred is None:
            port = free_port()
        else:
            port, replaced = pick_port(preferred)
            if replaced:
                self.replaced[name] = (preferred, port)
        self.ports[name] = port
        return port

    def start(self) -> RunInfo:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> RunInfo:
        if self.config.nats_nodes > 1:
            self.nats = start_nats_cluster(
                self.supervisor, self.var_dir / "nats", self.config.nats_nodes
            )
        else:
            self.nats = start_nats(self.supervisor, self.var_dir / "nats", self._port("nats"))
        self.s3 = self._start_s3()
        self.service_env = self._service_env()
        for replica in range(1, self.config.service_replicas + 1):
            for service in self.SERVICES:
                name = service if replica == 1 else f"{service}-{replica}"
                self._start_service(name, f"atelier_{service}", self._port(name), prefix=service)
        for worker in self.config.workers:
            for replica in range(worker.replica, worker.replica + self.config.service_replicas):
                self._start_worker(replace(worker, replica=replica))
        for name in self.supervisor.names():
            if name in self.instances:
                self._wait_ready_or_move(name)
        profile_id = self._seed_profile() if self.config.seed_demo_profile else None
        self.info = self._run_info(profile_id)
        (self.var_dir / "run.json").write_text(json.dumps(self.info.public(), indent=2) + "\n")
        return self.info

    def _start_s3(self) -> S3Info:
        # weed mini picks its other ports itself; only the S3 port is ours to prefer.
        return start_seaweed(
            self.supervisor,
            self.var_dir / "s3",
            self.secrets["s3_access_key"],
            self.secrets["s3_secret_key"],
            [STAGING_BUCKET, MEDIA_BUCKET],
        )

    def _service_env(self) -> dict[str, str]:
        assert self.nats is not None and self.s3 is not None
        env = {
            "ATELIER_ENVIRONMENT": "local",
            "ATELIER_VAR_DIR": str(self.var_dir),
            "ATELIER_NATS_URL": self.nats.service_url,
            "ATELIER_S3_ENDPOINT": self.s3.endpoint,
            "ATELIER_S3_ACCESS_KEY": self.s3.access_key,
            "ATELIER_S3_SECRET_KEY": self.s3.secret_key,
            "ATELIER_STAGING_BUCKET": STAGING_BUCKET,
            "ATELIER_MEDIA_BUCKET": MEDIA_BUCKET,
            "ATELIER_LOG_JSON": "true" if self.config.json_logs else "false",
            "ATELIER_GATEWAY_JWT_SECRET": self.secrets["jwt_secret"],
            "ATELIER_PROFILES_ADMIN_TOKEN": self.secrets["admin_token"],
            "PYTHONUNBUFFERED": "1",
        }
        if self.config.app_provider_aliases:
            env["ATELIER_GATEWAY_INKWELD_PROVIDER_ALIASES"] = json.dumps(
                self.config.app_provider_aliases
            )
        if self.config.database_url:
            env["DATABASE_URL"] = self.config.database_url
        if self.config.nats_nodes > 1:
            env["ATELIER_STREAM_REPLICAS"] = str(min(self.config.nats_nodes, 3))
        env.update(self.config.extra_env)
        return env

    def _start_service(
        self,
        name: str,
        module: str,
        port: int,
        extra: dict[str, str] | None = None,
        *,
        prefix: str | None = None,
    ) -> None:
        """Start `name` (`python -m <module>`) on `port`; `prefix` is its settings' name when
        `name` is a replica's (`gateway-2` reads `ATELIER_GATEWAY_*`)."""
        prefix = (prefix or ("workers" if name.startswith("worker-") else name)).upper()
        self._launches[name] = (module, dict(extra or {}), prefix)
        self.instances[name] = new_instance_id()
        env = {
            **self.service_env,
            f"ATELIER_{prefix}_PORT": str(port),
            INSTANCE_ID_ENV: self.instances[name],
            **(extra or {}),
        }
        self.supervisor.start(name, [sys.executable, "-m", module], env=env, cwd=self.var_dir)

    def _start_worker(self, worker: WorkerSpec) -> None:
        name = worker.name
        extra = {"ATELIER_WORKERS_PROVIDER": worker.provider, **worker.env}
        self._start_service(name, "atelier_workers", self._port(name), extra, prefix="workers")

    def stop(self) -> None:
        self.supervisor.stop_all()

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- chaos helpers for tests ---------------------------------------------------------------

    def kill(self, name: str) -> None:
        self.supervisor.kill(name)

    def restart(self, name: str) -> None:
        self.supervisor.restart(name)
        if name in self.instances:
            self._wait_ready(name)

    def watchdog(self, say: Callable[[str], None], policy: RestartPolicy | None = None) -> Watchdog:
        """A watchdog over every process of this (started) stack: one that dies is started
        again with the same command, environment and port. nats-server and SeaweedFS are waited
        for (a second or two); a service is not: one that cannot start yet (its NATS is itself
        restarting) exits and is started again after its backoff, while the watchdog goes on
        watching the others."""
        supervisor = self.supervisor
        return Watchdog(
            names=supervisor.names,
            exit_code=lambda name: supervisor.process(name).popen.poll(),
            log_path=lambda name: supervisor.process(name).log_path,
            restart=supervisor.restart,
            say=say,
            policy=policy,
        )

    def _wait_ready_or_move(self, name: str) -> None:
        """Wait until `name` is ready; if another process took its port between our free-port
        check and its bind, start it again on a new port (a few times, then give up)."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._wait_ready(name)
                return
            except PortTakenError:
                if attempt == PORT_ATTEMPTS:
                    raise
            module, extra, prefix = self._launches[name]
            self._start_service(name, module, self._port(name), extra, prefix=prefix)

    def _wait_ready(self, name: str) -> None:
        wait_http_instance(
            f"{self.url(name)}/readyz",
            self.instances[name],
            timeout=60,
            process=self.supervisor.process(name),
        )

    # -- URLs, tokens, seed --------------------------------------------------------------------

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def _seed_profile(self) -> str:
        headers = {"Authorization": f"Bearer {self.secrets['admin_token']}"}
        with httpx.Client(
            base_url=self.url("profiles"), headers=headers, timeout=10, trust_env=False
        ) as client:
            listed = client.get("/admin/v1/profiles")
            listed.raise_for_status()
            for profile in listed.json():
                if profile["name"] == DEMO_PROFILE["name"]:
                    return str(profile["id"])
            created = client.post("/admin/v1/profiles", json=DEMO_PROFILE)
            created.raise_for_status()
            return str(created.json()["id"])

    def _run_info(self, profile_id: str | None) -> RunInfo:
        assert self.nats is not None and self.s3 is not None
        secret = self.secrets["jwt_secret"]
        projects = {"user": "demo-project", "second_user": "second-project"}
        return RunInfo(
            gateway_url=self.url("gateway"),
            admin_url=self.url("profiles"),
            user_token=mint_user_token(secret, "demo-user", [projects["user"]]),
            admin_token=self.secrets["admin_token"],
            second_user_token=mint_user_token(secret, "second-user", [projects["second_user"]]),
            app_admin_token=mint_app_admin_token(
                secret, APP_USER, [APP_PROJECT.replace("/", "__")]
            ),
            app_project=APP_PROJECT,
            nats_url=self.nats.service_url,
            s3_endpoint=self.s3.endpoint,
            projects=projects,
            profile_id=profile_id,
            replaced_ports=dict(self.replaced),
        )

    def mint_token(self, user_id: str, projects: list[str]) -> str:
        return mint_user_token(self.secrets["jwt_secret"], user_id, projects)


def default_var_dir() -> Path:
    return Path(os.environ.get("ATELIER_VAR_DIR", "var"))
