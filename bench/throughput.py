"""Throughput: small offline images per second sustained through every service (gateway →
context → dispatch → worker → media, thumbnails included), with the CPU seconds each process
spends per image and the bottleneck named.

    uv run python -m bench.throughput             # 60 s measured after a 10 s warm-up
    uv run python -m bench.throughput --quick     # 10 s after 3 s

Load is a closed loop: `--in-flight` writers each submit a job and submit the next as soon as
theirs has landed, so the queue never grows without bound.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.common import (
    JobWatch,
    ProcessWatch,
    Submitter,
    bench_stack,
    cpu_delta,
    ensure_project_venv,
    env_of,
    parser,
    wait_landed,
    write_result,
)


async def closed_loop(
    submitter: Submitter, seconds: float, in_flight: int, size: str, count: int
) -> tuple[int, int]:
    """Run for `seconds`; returns (jobs submitted, jobs that did not land in 120 s)."""
    deadline = time.monotonic() + seconds
    submitted = lost = 0

    async def lane() -> None:
        nonlocal submitted, lost
        while time.monotonic() < deadline:
            _, record = await submitter.submit(size=size, count=count)
            submitted += 1
            if not await wait_landed(record, 120):
                lost += 1

    await asyncio.gather(*(lane() for _ in range(in_flight)))
    return submitted, lost


async def measure(
    seconds: float, warmup: float, in_flight: int, size: str, count: int, env: dict[str, str]
) -> dict[str, Any]:
    with bench_stack("throughput", extra_env=env) as bench:
        procs = ProcessWatch(bench.stack)
        async with JobWatch(bench.info.nats_url) as watch:
            submitter = Submitter(bench, watch, connections=in_flight)
            try:
                window: dict[str, float] = {}

                async def mark_window() -> tuple[dict[str, float], dict[str, float]]:
                    await asyncio.sleep(warmup)
                    window["start"] = time.monotonic()
                    before = procs.cpu()
                    await asyncio.sleep(seconds)
                    window["end"] = time.monotonic()
                    return before, procs.cpu()

                marker = asyncio.create_task(mark_window())
                submitted, lost = await closed_loop(
                    submitter, warmup + seconds, in_flight, size, count
                )
                cpu_before, cpu_after = await marker
            finally:
                await submitter.aclose()
    wall = window["end"] - window["start"]
    images = sum(n for t, n in watch.images_landed if window["start"] <= t < window["end"])
    jobs = sum(1 for t in watch.finals if window["start"] <= t < window["end"])
    not_completed = sum(1 for r in watch.jobs.values() if r.status not in (None, "completed"))
    cpu = cpu_delta(cpu_before, cpu_after)
    services = {k: v for k, v in cpu.items() if k != "bench-client"}
    busiest = max(services, key=lambda k: services[k])
    utilisation = {k: round(v / wall, 3) for k, v in cpu.items()}
    total_util = sum(cpu.values()) / wall
    return {
        "env": env,
        "submissions_refused": {str(k): v for k, v in submitter.refusals.items()},
        "submissions_retried_after_connection_errors": dict(submitter.transport_retries),
        "size": size,
        "count_per_job": count,
        "in_flight": in_flight,
        "seconds": round(wall, 2),
        "jobs_submitted": submitted,
        "jobs_lost": lost,
        "jobs_not_completed": not_completed,
        "jobs_per_s": round(jobs / wall, 1),
        "images_per_s": round(images / wall, 1),
        "cpu_s": cpu,
        "cpu_cores_used": utilisation,
        "machine_cores_busy": round(total_util, 2),
        "cpu_ms_per_image": {k: round(v * 1000 / max(images, 1), 2) for k, v in cpu.items()},
        "services_cpu_ms_per_image": round(sum(services.values()) * 1000 / max(images, 1), 2),
        "bottleneck": {
            "process": busiest,
            "cores": utilisation[busiest],
            "note": (
                f"both cores busy ({total_util:.2f} of {len(cpu) and 2}); {busiest} spends the "
                "most CPU per image"
                if total_util > 1.8
                else f"{busiest} is the busiest process at {utilisation[busiest]:.0%} of a core"
            ),
        },
        "targets": {
            "images_per_s>=130": images / wall >= 130,
            "cpu_ms_per_image<=8": sum(services.values()) * 1000 / max(images, 1) <= 8,
        },
    }


def main() -> None:
    ensure_project_venv()
    cli = parser(__doc__.split("\n\n")[0])
    cli.add_argument("--seconds", type=float, default=None, help="measured time (default 60)")
    cli.add_argument("--in-flight", type=int, default=32, help="jobs in flight (default 32)")
    cli.add_argument("--size", default="64x64", help="image size (default 64x64)")
    cli.add_argument("--count", type=int, default=1, help="images per job (1, 2 or 4)")
    args = cli.parse_args()
    seconds = args.seconds or (10 if args.quick else 60)
    warmup = 3 if args.quick else 10
    result = asyncio.run(
        measure(seconds, warmup, args.in_flight, args.size, args.count, env_of(args.env))
    )
    print(
        f"{result['images_per_s']} images/s over {result['seconds']} s; "
        f"{result['services_cpu_ms_per_image']} ms CPU/image; bottleneck "
        f"{result['bottleneck']['note']}"
    )
    write_result("throughput", result, args.out, args.quick)


if __name__ == "__main__":
    main()
