"""Overhead: submit → landed latency of a small offline image at low load, beside a direct
in-process call of the same adapter. What is left is Atelier's own cost per image.

    uv run python -m bench.overhead            # N=200, 1 job in flight
    uv run python -m bench.overhead --quick    # N=20
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from bench.common import (
    JobWatch,
    ProcessWatch,
    Submitter,
    bench_stack,
    cpu_delta,
    ensure_project_venv,
    env_of,
    ms,
    parser,
    percentiles,
    wait_landed,
    write_result,
)


async def direct_adapter_latencies(n: int, size: str) -> list[float]:
    """The same OfflineAdapter the worker runs, called in this process: the floor."""
    from atelier_workers.adapters.base import ImageRequest
    from atelier_workers.adapters.offline import OfflineAdapter

    adapter = OfflineAdapter()
    latencies = []
    async with httpx.AsyncClient() as client:
        for i in range(n + 5):
            request = ImageRequest(model="offline-sketch", prompt=f"bench image {i}", size=size)
            started = time.perf_counter()
            output = await adapter.generate(request, client)
            elapsed = time.perf_counter() - started
            assert output.images
            if i >= 5:  # the first calls load the font
                latencies.append(elapsed)
    return latencies


async def stack_latencies(
    submitter: Submitter,
    n: int,
    size: str,
    in_flight: int,
    warmup: int,
    accepted_by_index: dict[int, float] | None = None,
) -> tuple[list[float], list[float], int]:
    """(submit→landed, submit→202) of `n` jobs kept `in_flight` at a time; failures counted.
    `accepted_by_index` gets every job's submit→202 by its place in the run, warm-up included
    (the first `in_flight` are the opening burst: they are all sent at once)."""
    landed: list[float] = []
    accepted: list[float] = []
    failed = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n + warmup):
        queue.put_nowait(i)

    async def one_lane() -> None:
        nonlocal failed
        while not queue.empty():
            i = queue.get_nowait()
            _, record = await submitter.submit(size=size)
            ok = await wait_landed(record, 120)
            if accepted_by_index is not None and record.accepted_at and record.submitted_at:
                accepted_by_index[i] = record.accepted_at - record.submitted_at
            if not ok or record.status != "completed":
                failed += 1
                continue
            if i < warmup:
                continue
            assert record.submitted_at and record.final_at and record.accepted_at
            landed.append(record.final_at - record.submitted_at)
            accepted.append(record.accepted_at - record.submitted_at)

    await asyncio.gather(*(one_lane() for _ in range(in_flight)))
    return landed, accepted, failed


async def measure(n: int, size: str, in_flight: int, env: dict[str, str]) -> dict[str, Any]:
    direct = await direct_adapter_latencies(n, size)
    with bench_stack("overhead", extra_env=env) as bench:
        procs = ProcessWatch(bench.stack)
        async with JobWatch(bench.info.nats_url) as watch:
            submitter = Submitter(bench, watch)
            try:
                warmup = min(20, n)
                await stack_latencies(submitter, warmup, size, 1, 0)
                cpu_before = procs.cpu()
                started = time.monotonic()
                landed, accepted, failed = await stack_latencies(submitter, n, size, in_flight, 0)
                wall = time.monotonic() - started
                cpu = cpu_delta(cpu_before, procs.cpu())
            finally:
                await submitter.aclose()
    stack_stats, direct_stats = percentiles(landed), percentiles(direct)
    overhead = {key: stack_stats[key] - direct_stats[key] for key in ("p50", "p95", "p99", "mean")}
    images = len(landed)
    services_cpu = sum(v for k, v in cpu.items() if k != "bench-client")
    return {
        "env": env,
        "submissions_refused": {str(k): v for k, v in submitter.refusals.items()},
        "submissions_retried_after_connection_errors": dict(submitter.transport_retries),
        "size": size,
        "in_flight": in_flight,
        "jobs": n,
        "failed": failed,
        "direct_adapter_ms": ms(direct_stats),
        "submit_to_landed_ms": ms(stack_stats),
        "submit_to_202_ms": ms(percentiles(accepted)),
        "overhead_ms": {k: round(v * 1000, 3) for k, v in overhead.items()},
        "ratio_p50": round(stack_stats["p50"] / direct_stats["p50"], 1),
        "wall_s": round(wall, 2),
        "cpu_s": cpu,
        "cpu_ms_per_image": {k: round(v * 1000 / max(images, 1), 2) for k, v in cpu.items()},
        "services_cpu_ms_per_image": round(services_cpu * 1000 / max(images, 1), 2),
        "targets": {
            "overhead_p50_ms<=8.6": overhead["p50"] * 1000 <= 8.6,
            "overhead_p99_ms<=50": overhead["p99"] * 1000 <= 50,
        },
    }


def main() -> None:
    ensure_project_venv()
    cli = parser(__doc__.split("\n\n")[0])
    cli.add_argument("-n", type=int, default=None, help="jobs to time (default 200; quick 20)")
    cli.add_argument("--size", default="64x64", help="image size (default 64x64)")
    cli.add_argument("--in-flight", type=int, default=1, help="jobs in flight (default 1)")
    args = cli.parse_args()
    n = args.n or (20 if args.quick else 200)
    result = asyncio.run(measure(n, args.size, args.in_flight, env_of(args.env)))
    print(
        f"overhead p50 {result['overhead_ms']['p50']} ms, p99 {result['overhead_ms']['p99']} ms; "
        f"landed p50 {result['submit_to_landed_ms']['p50']} ms vs direct "
        f"{result['direct_adapter_ms']['p50']} ms; failed {result['failed']}"
    )
    write_result("overhead", result, args.out, args.quick)


if __name__ == "__main__":
    main()
