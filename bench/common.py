"""What every benchmark shares: the real stack, the admin set-up, submitting jobs, watching them
land, and reading CPU time and memory of each process from /proc.

Everything here talks to 127.0.0.1 only: the stack is started with `prefer_standard_ports=False`,
so every port is a free one picked at start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats

from atelier_devstack.stack import RunInfo, Stack, StackConfig, WorkerSpec

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
FINAL = frozenset({"completed", "partial", "failed", "cancelled"})
PROJECT = "demo-project"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
RETRIES = 40  # submissions refused with 503/429 are retried, 0.5 s apart, this many times

BENCH_PROFILE: dict[str, Any] = {
    "name": "Bench (offline)",
    "provider": "offline",
    "model": "offline-sketch",
    "enabled": True,
    "sizes": ["64x64", "256x256", "512x512", "1024x1024", "2048x2048"],
    "default_size": "64x64",
    "counts": [1, 2, 4],
    "options": [
        {"name": "seed", "kind": "integer", "minimum": 0, "maximum": 2147483647},
        {"name": "delay_s", "kind": "number", "minimum": 0, "maximum": 60, "default": 0},
    ],
    "max_reference_images": 0,
    "prompt_max_length": 4000,
    "timeout_s": 600,
    "sort_order": 0,
    "credit_cost": 0,
}


# --- arguments, machine, results ------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    parsed = argparse.ArgumentParser(description=description)
    parsed.add_argument(
        "--quick", action="store_true", help="a short run to check the script works (minutes→s)"
    )
    parsed.add_argument(
        "--out", type=Path, default=None, help="result JSON (default bench/results/<name>.json)"
    )
    parsed.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for every service (repeatable), e.g. ATELIER_LOG_LEVEL=WARNING",
    )
    return parsed


def env_of(pairs: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in pairs)


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        # Other work on the same cores (a test suite, another benchmark) shows up here: latency
        # and throughput figures taken under load are upper bounds; CPU per image is not.
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def result_path(name: str, quick: bool) -> Path:
    """bench/results/<name>.json, or for a quick run <name>.quick.json.tmp (ignored by git)."""
    return RESULTS_DIR / (f"{name}.quick.json.tmp" if quick else f"{name}.json")


def write_result(name: str, result: dict[str, Any], out: Path | None, quick: bool) -> Path:
    """Write `result` with the machine and command; quick runs go to a `.tmp` file (ignored)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = out or result_path(name, quick)
    document = {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, "-m", f"bench.{name}", *sys.argv[1:]]),
        "quick": quick,
        "machine": machine(),
        **result,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99 (nearest rank), mean, min, max of `values`, in the unit given."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        index = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
        return ordered[index]

    return {
        "n": len(ordered),
        "p50": rank(50),
        "p95": rank(95),
        "p99": rank(99),
        "mean": sum(ordered) / len(ordered),
        "min": ordered[0],
        "max": ordered[-1],
    }


def ms(stats: dict[str, float]) -> dict[str, float]:
    """Seconds → milliseconds (rounded) for every latency figure in `stats`."""
    return {k: (v if k == "n" else round(v * 1000, 3)) for k, v in stats.items()}


# --- /proc ------------------------------------------------------------------------------------


def _group_pids(pgid: int) -> list[int]:
    """Every live process in process group `pgid` (the supervisor starts each in its own)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:  # fields[0] is the state; pgrp is the 5th field of stat
            pids.append(int(entry))
    return pids


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (14th, 15th field)


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process in KiB: now and the kernel's own peak."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


class ProcessWatch:
    """CPU seconds and peak RSS per named process (each a process group of the supervisor),
    plus this benchmark process itself as `bench-client`."""

    def __init__(self, stack: Stack) -> None:
        self.groups: dict[str, list[int]] = {}
        for name in stack.supervisor.names():
            leader = stack.supervisor.process(name).pid
            self.groups[name] = _group_pids(leader) or [leader]
        self.groups["bench-client"] = [os.getpid()]
        self.peak_rss_kb: dict[str, int] = dict.fromkeys(self.groups, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def cpu(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in self.groups.items()}

    def sample_rss(self) -> None:
        for name, pids in self.groups.items():
            total = sum(rss_kb(pid)[0] for pid in pids)
            self.peak_rss_kb[name] = max(self.peak_rss_kb[name], total)

    def hwm_kb(self) -> dict[str, int]:
        return {name: sum(rss_kb(pid)[1] for pid in pids) for name, pids in self.groups.items()}

    def start_sampling(self, every_s: float = 0.5) -> None:
        def loop() -> None:
            while not self._stop.wait(every_s):
                self.sample_rss()

        self.sample_rss()
        self._thread = threading.Thread(target=loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop_sampling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample_rss()


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before.get(name, 0.0), 3) for name in after}


# --- the stack --------------------------------------------------------------------------------


@dataclass
class BenchStack:
    stack: Stack
    info: RunInfo
    profile_id: str
    var_dir: Path
    extra_profiles: dict[str, str] = field(default_factory=dict)

    def admin(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.info.admin_token}"}
        return httpx.Client(base_url=self.info.admin_url, headers=headers, timeout=10)

    def create_profile(self, profile: dict[str, Any]) -> str:
        with self.admin() as client:
            created = client.post("/admin/v1/profiles", json=profile)
            created.raise_for_status()
            profile_id = str(created.json()["id"])
        self.extra_profiles[profile["name"]] = profile_id
        return profile_id


BENCH_USER_UNBOUNDED = {
    "ATELIER_PROFILES_USER_MAX_JOBS_IN_FLIGHT": "1000000",
    "ATELIER_PROFILES_USER_MAX_BYTES_IN_FLIGHT": str(1 << 40),
}


@contextlib.contextmanager
def bench_stack(
    name: str,
    *,
    extra_env: dict[str, str] | None = None,
    workers: list[WorkerSpec] | None = None,
) -> Iterator[BenchStack]:
    """The whole real stack on free ports in a throwaway directory, quotas lifted, a bench
    profile (offline, 64² … 2048²) created; stopped and removed on exit."""
    var_dir = Path(tempfile.mkdtemp(prefix=f"atelier-bench-{name}-"))
    config = StackConfig(
        var_dir=var_dir,
        prefer_standard_ports=False,
        workers=workers or [WorkerSpec("offline")],
        # One bench user submits everything: its in-flight budget (a fairness limit between
        # users, 100 jobs by default) would turn a 512-in-flight run into 429s and retries.
        extra_env={**BENCH_USER_UNBOUNDED, **(extra_env or {})},
        seed_demo_profile=False,
    )
    stack = Stack(config)
    started = time.monotonic()
    info = stack.start()
    try:
        print(f"stack up in {time.monotonic() - started:.1f}s ({var_dir})", flush=True)
        headers = {"Authorization": f"Bearer {info.admin_token}"}
        with httpx.Client(base_url=info.admin_url, headers=headers, timeout=10) as client:
            # One bench user submits everything: lift the per-user rate limit and credits too.
            lifted = client.put(
                "/admin/v1/quotas", json={"credits_per_period": None, "rate_limit_count": None}
            )
            lifted.raise_for_status()
            created = client.post("/admin/v1/profiles", json=BENCH_PROFILE)
            created.raise_for_status()
            profile_id = str(created.json()["id"])
        yield BenchStack(stack=stack, info=info, profile_id=profile_id, var_dir=var_dir)
    finally:
        stack.stop()
        shutil.rmtree(var_dir, ignore_errors=True)


# --- submitting and watching jobs -------------------------------------------------------------


@dataclass
class JobRecord:
    submitted_at: float | None = None  # monotonic, just before the POST
    accepted_at: float | None = None  # the 202 arrived
    started_at: float | None = None  # first gen.started (the provider call begins)
    final_at: float | None = None
    status: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class JobWatch:
    """Follows every job's status events and the workers' `gen.started` on core NATS, so
    landing is observed the moment dispatch publishes it (no polling, no SSE per job)."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.jobs: dict[str, JobRecord] = {}
        self.finals: list[float] = []  # monotonic times of final states, in arrival order
        self.images_landed: list[tuple[float, int]] = []
        self._nc: Any = None

    def record(self, job_id: str) -> JobRecord:
        record = self.jobs.get(job_id)
        if record is None:
            record = self.jobs[job_id] = JobRecord()
        return record

    async def __aenter__(self) -> JobWatch:
        self._nc = await nats.connect(self.nats_url, connect_timeout=5)
        # Outcomes are published on jobs.finished (once, since ADR 0018; before it, on both).
        await self._nc.subscribe("jobs.status.>", cb=self._on_status)
        await self._nc.subscribe("jobs.finished.>", cb=self._on_status)
        await self._nc.subscribe("gen.started", cb=self._on_started)
        await self._nc.flush()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._nc.drain()

    async def _on_status(self, msg: Any) -> None:
        now = time.monotonic()
        job = json.loads(msg.data)["job"]
        record = self.record(job["id"])
        if job["status"] in FINAL and record.final_at is None:
            record.final_at = now
            record.status = job["status"]
            self.finals.append(now)
            self.images_landed.append((now, int(job["progress"]["landed"])))
            record.done.set()

    async def _on_started(self, msg: Any) -> None:
        now = time.monotonic()
        job_id = json.loads(msg.data)["job_id"]
        record = self.record(job_id)
        if record.started_at is None:
            record.started_at = now


# Connections per httpx pool. One pool of 512 made a closed loop of 512 jobs measure the
# client: httpx's pool is slow to hand out connections when hundreds wait (submit → 202 p50
# 9.9 s with one pool, 84 ms with sixteen of 32, the gateway's own time the same).
CONNECTIONS_PER_POOL = 32


class Submitter:
    """Posts jobs to the gateway as the demo user (or the user of `token`, into `project`),
    over keep-alive connection pools of at most `CONNECTIONS_PER_POOL` connections each, taken
    in turn."""

    def __init__(
        self,
        bench: BenchStack,
        watch: JobWatch,
        *,
        connections: int = 64,
        token: str | None = None,
        project: str = PROJECT,
    ) -> None:
        self.bench = bench
        self.watch = watch
        self.project = project
        pools = max(1, -(-connections // CONNECTIONS_PER_POOL))
        per_pool = -(-connections // pools)
        self.clients = [
            httpx.AsyncClient(
                base_url=bench.info.gateway_url,
                headers={"Authorization": f"Bearer {token or bench.info.user_token}"},
                timeout=httpx.Timeout(60.0),
                limits=httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool),
            )
            for _ in range(pools)
        ]
        self.counter = 0
        self.rejected = 0
        self.refusals: dict[int, int] = {}
        self.transport_retries: dict[str, int] = {}

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()

    async def submit(
        self,
        *,
        size: str = "64x64",
        count: int = 1,
        options: dict[str, Any] | None = None,
        profile_id: str | None = None,
    ) -> tuple[str, JobRecord]:
        self.counter += 1
        body = {
            "project": self.project,
            "profile_id": profile_id or self.bench.profile_id,
            "prompt": f"bench image {self.counter}",
            "size": size,
            "count": count,
            "options": {"seed": self.counter, **(options or {})},
        }
        submitted = time.monotonic()
        # As the app would: a 503 (a service the gateway asks did not answer in time) or 429 is
        # retried after a pause, and so is a connection the server closed under us (a keep-alive
        # connection idle past uvicorn's timeout, reused at that very moment). The Idempotency-
        # Key makes a retry name the same job, so it never makes two; every retry is counted.
        headers = {"Idempotency-Key": f"bench-{uuid.uuid4()}"}
        for attempt in range(RETRIES):
            try:
                client = self.clients[self.counter % len(self.clients)]
                response = await client.post("/v1/generations", json=body, headers=headers)
            except httpx.TransportError as exc:
                name = type(exc).__name__
                self.transport_retries[name] = self.transport_retries.get(name, 0) + 1
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(0.1)
                continue
            if response.status_code in (200, 202):
                break
            self.rejected += 1
            self.refusals[response.status_code] = self.refusals.get(response.status_code, 0) + 1
            if attempt == RETRIES - 1 or response.status_code not in (429, 503):
                response.raise_for_status()
            await asyncio.sleep(0.5)
        job_id = str(response.json()["id"])
        record = self.watch.record(job_id)
        record.submitted_at = submitted
        record.accepted_at = time.monotonic()
        return job_id, record


async def wait_landed(record: JobRecord, timeout_s: float) -> bool:
    try:
        await asyncio.wait_for(record.done.wait(), timeout_s)
        return True
    except TimeoutError:
        return False


def ensure_project_venv() -> None:
    """The benchmarks import the workspace packages: run them with the project's Python."""
    try:
        import atelier_workers  # noqa: F401
    except ImportError:
        sys.exit("run with the project venv: `make bench` or `uv run python -m bench ...`")
