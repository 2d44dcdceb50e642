"""Quota reservations under load: `profiles.query.quota_reserve` latency with N in flight.

    .venv/bin/python -m bench.quota_reserve                     # SQLite, 512 in flight
    .venv/bin/python -m bench.quota_reserve --database postgresql://postgres@127.0.0.1/postgres
    .venv/bin/python -m bench.quota_reserve --in-flight 64 --users 16 --seconds 10

The profiles service alone, as its own process, on a real nats-server (and a real database):
N writers in a closed loop, spread over U users, each reserving a job (the request the gateway
makes for every `POST /v1/generations`), then publishing that job's final status on
`jobs.finished.<project>.<job>` (the settlement dispatch causes) and reserving the next one.
So reservations meet settlements on the same database, as in the full stack. Latency is the
request/reply round trip the gateway waits for; every reply must be `reserved` (the policy
allows everything), anything else is counted apart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from faststream.nats import NatsBroker

from atelier_contracts.jobs import JobProgress, JobStatus, JobStatusChanged, JobView
from atelier_contracts.profiles import (
    QuotaReserveBatch,
    QuotaReserveBatchReply,
    QuotaReserveRequest,
)
from atelier_contracts.subjects import Subject, job_finished
from atelier_devstack import throwaway_database
from atelier_devstack.nats import start_nats
from atelier_devstack.ports import free_port
from atelier_devstack.processes import Supervisor, wait_http_ok
from atelier_messaging import publish_event, query
from bench.common import ROOT, cpu_seconds, percentiles

ADMIN = "bench-admin-token"


async def run_load(
    nats_url: str,
    admin_url: str,
    *,
    in_flight: int,
    users: int,
    seconds: float,
    settle: bool,
    rate: float,
    pids: dict[str, int],
) -> dict[str, Any]:
    async with httpx.AsyncClient(
        base_url=admin_url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    ) as admin:
        # Everything allowed (rate limit and credits): the bench measures waiting, not refusals.
        await admin.put(
            "/admin/v1/quotas", json={"credits_per_period": None, "rate_limit_count": None}
        )
        created = await admin.post(
            "/admin/v1/profiles",
            json={
                "name": f"Bench {uuid.uuid4().hex[:6]}",
                "provider": "offline",
                "model": "offline-sketch",
                "sizes": ["64x64"],
                "default_size": "64x64",
                "credit_cost": 1,
            },
        )
        created.raise_for_status()
        profile = created.json()

    broker = NatsBroker(nats_url)
    await broker.connect()
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    errors: list[str] = []
    deadline = time.monotonic() + seconds

    async def writer(n: int) -> None:
        while time.monotonic() < deadline:
            await one(n)

    async def open_loop() -> None:
        # `rate` reservations a second whatever the answers take: latency is then waiting, not
        # the closed loop's in_flight / throughput.
        tasks: set[asyncio.Task[None]] = set()
        n = 0
        begin = time.monotonic()
        while time.monotonic() < deadline:
            n += 1
            task = asyncio.create_task(one(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(max(0.0, begin + n / rate - time.monotonic()))
        await asyncio.gather(*tasks)

    async def one(n: int) -> None:
        user = f"user-{n % users}"
        job_id = uuid.uuid4().hex
        request = QuotaReserveRequest(
            job_id=job_id, user_id=user, project="bench", profile_id=profile["id"], count=1
        )
        started = time.perf_counter()
        try:
            batch = QuotaReserveBatch(requests=[request])
            [reply] = (
                await query(broker, Subject.QUOTA_RESERVE, batch, QuotaReserveBatchReply, 30)
            ).replies
        except Exception as exc:  # a timeout is a result here, not a crash
            errors.append(type(exc).__name__)
            return
        latencies.append(time.perf_counter() - started)
        timeline.append((started, time.perf_counter() - started))
        outcomes[reply.outcome] = outcomes.get(reply.outcome, 0) + 1
        if settle and reply.outcome == "reserved":
            done = finished(job_id, user, profile)
            await publish_event(broker, done, job_finished("bench", job_id))

    timeline: list[tuple[float, float]] = []
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    client_before = time.process_time()
    started = time.monotonic()
    if rate:
        await open_loop()
    else:
        await asyncio.gather(*(writer(n) for n in range(in_flight)))
    wall = time.monotonic() - started
    cpu = {name: round(cpu_seconds(pid) - cpu_before[name], 2) for name, pid in pids.items()}
    cpu["bench-client"] = round(time.process_time() - client_before, 2)
    await broker.stop()
    stats = percentiles(latencies)
    if timeline and os.environ.get("BENCH_TIMELINE"):  # median latency per second of the run
        first = min(t for t, _ in timeline)
        by_second: dict[int, list[float]] = {}
        for t, latency in timeline:
            by_second.setdefault(int(t - first), []).append(latency)
        for second, values in sorted(by_second.items()):
            print(second, len(values), round(sorted(values)[len(values) // 2] * 1000, 1))
    return {
        "in_flight": None if rate else in_flight,
        "rate": rate or None,
        "cpu_s": cpu,
        "wall_s": round(wall, 1),
        "users": users,
        "settle": settle,
        "reservations": len(latencies),
        "per_s": round(len(latencies) / wall, 1),
        "latency_ms": {k: (round(v * 1000, 2) if k != "n" else v) for k, v in stats.items()},
        "outcomes": outcomes,
        "errors": len(errors),
    }


def finished(job_id: str, user: str, profile: dict[str, Any]) -> JobStatusChanged:
    now = datetime.now(UTC)
    return JobStatusChanged(
        job=JobView(
            id=job_id,
            project="bench",
            user_id=user,
            profile_id=profile["id"],
            profile_name=profile["name"],
            provider="offline",
            model="offline-sketch",
            status=JobStatus.COMPLETED,
            prompt="a lighthouse",
            size="64x64",
            count=1,
            progress=JobProgress(total=1, landed=1),
            created_at=now,
            updated_at=now,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--in-flight", type=int, default=512)
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="open loop: reservations a second (0: closed)"
    )
    parser.add_argument("--no-settle", action="store_true", help="reserve only")
    parser.add_argument(
        "--database", default="", help="PostgreSQL admin URL (a throwaway database on it)"
    )
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for profiles")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-quota-") as tmp, Supervisor(Path(tmp)) as sup:
        nats = start_nats(sup, Path(tmp) / "nats")
        port = free_port()
        env = {
            "ATELIER_NATS_URL": nats.url,
            "ATELIER_PROFILES_ADMIN_TOKEN": ADMIN,
            "ATELIER_PROFILES_PORT": str(port),
            "ATELIER_PROFILES_USER_MAX_JOBS_IN_FLIGHT": "1000000",
            "ATELIER_PROFILES_LOG_LEVEL": "WARNING",
            **dict(pair.split("=", 1) for pair in args.env),
        }

        def run(database_url: str) -> dict[str, Any]:
            env["ATELIER_PROFILES_DATABASE_URL"] = database_url
            profiles = sup.start(
                "profiles",
                [str(ROOT / ".venv" / "bin" / "python"), "-m", "atelier_profiles"],
                env=env,
                cwd=ROOT,
                ready=lambda p: wait_http_ok(f"http://127.0.0.1:{port}/readyz", 30, process=p),
            )
            return asyncio.run(
                run_load(
                    nats.url,
                    f"http://127.0.0.1:{port}",
                    in_flight=args.in_flight,
                    users=args.users,
                    seconds=args.seconds,
                    settle=not args.no_settle,
                    rate=args.rate,
                    pids={"profiles": profiles.pid, "nats": sup.process("nats").pid},
                )
            )

        if args.database:
            with throwaway_database(args.database) as url:
                result = run(url)
        else:
            result = run(f"sqlite:///{Path(tmp) / 'profiles.db'}")
        result["database"] = "postgresql" if args.database else "sqlite"
        print(result)
        if os.environ.get("BENCH_PROFILES_LOG"):
            print((Path(tmp) / "profiles.log").read_text()[-4000:])


if __name__ == "__main__":
    main()
