"""Scaling: how Atelier's overhead per image grows with jobs in flight and with image size.

    uv run python -m bench.scaling            # in flight 1, 8, 64, 512; sizes 256² … 2048²
    uv run python -m bench.scaling --quick    # in flight 1, 8, 64; sizes 256², 1024²

Jobs in flight: a closed loop of N writers with the offline provider at 64x64; per image,
submit → landed minus the direct adapter call. With N jobs in flight a job also waits behind
N-1 others, so this is the latency a writer sees at that load, not only Atelier's own work.
The 5,000 point is `bench.concurrency` (a 20 s provider; its figure there is landed - 20 s).

Image size: one job in flight, and the direct adapter call at the same size beside it (the
offline adapter draws and encodes the PNG, media decodes it for the thumbnail, so both grow).
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
    ms,
    parser,
    percentiles,
    write_result,
)
from bench.overhead import direct_adapter_latencies, stack_latencies


async def measure(
    in_flights: list[int], sizes: list[str], per_point: int, env: dict[str, str]
) -> dict[str, Any]:
    direct_small = percentiles(await direct_adapter_latencies(50, "64x64"))
    direct_by_size = {size: percentiles(await direct_adapter_latencies(10, size)) for size in sizes}
    by_in_flight: list[dict[str, Any]] = []
    by_size: list[dict[str, Any]] = []
    with bench_stack("scaling", extra_env=env) as bench:
        procs = ProcessWatch(bench.stack)
        async with JobWatch(bench.info.nats_url) as watch:
            submitter = Submitter(bench, watch, connections=max(in_flights))
            try:
                await stack_latencies(submitter, 20, "64x64", 1, 0)  # warm up
                for n in in_flights:
                    jobs = max(per_point, 2 * n)
                    before, started = procs.cpu(), time.monotonic()
                    by_index: dict[int, float] = {}
                    landed, accepted, failed = await stack_latencies(
                        submitter,
                        jobs,
                        "64x64",
                        n,
                        warmup=min(n, jobs // 4),
                        accepted_by_index=by_index,
                    )
                    wall = time.monotonic() - started
                    cpu = cpu_delta(before, procs.cpu())
                    stats = percentiles(landed)
                    by_in_flight.append(
                        {
                            "in_flight": n,
                            "jobs": jobs,
                            "failed": failed,
                            "submit_to_landed_ms": ms(stats),
                            "submit_to_202_ms": ms(percentiles(accepted)),
                            # The opening burst (all `n` sent at once) apart from the rest,
                            # where a submission arrives as another job lands.
                            "submit_to_202_opening_burst_ms": ms(
                                percentiles([v for i, v in by_index.items() if i < n])
                            ),
                            "submit_to_202_after_burst_ms": ms(
                                percentiles([v for i, v in by_index.items() if i >= n])
                            ),
                            "overhead_p50_ms": round((stats["p50"] - direct_small["p50"]) * 1e3, 1),
                            "overhead_p99_ms": round((stats["p99"] - direct_small["p99"]) * 1e3, 1),
                            "images_per_s": round(jobs / wall, 1),
                            "services_cpu_ms_per_image": round(
                                sum(v for k, v in cpu.items() if k != "bench-client") * 1000 / jobs,
                                1,
                            ),
                        }
                    )
                    print(by_in_flight[-1], flush=True)
                for size in sizes:
                    jobs = max(10, per_point // 4)
                    landed, _, failed = await stack_latencies(submitter, jobs, size, 1, warmup=2)
                    stats, direct = percentiles(landed), direct_by_size[size]
                    by_size.append(
                        {
                            "size": size,
                            "jobs": jobs,
                            "failed": failed,
                            "direct_adapter_ms": ms(direct),
                            "submit_to_landed_ms": ms(stats),
                            "overhead_p50_ms": round((stats["p50"] - direct["p50"]) * 1e3, 1),
                            "overhead_p99_ms": round((stats["p99"] - direct["p99"]) * 1e3, 1),
                        }
                    )
                    print(by_size[-1], flush=True)
            finally:
                await submitter.aclose()
    return {
        "env": env,
        "submissions_refused": {str(k): v for k, v in submitter.refusals.items()},
        "submissions_retried_after_connection_errors": dict(submitter.transport_retries),
        "direct_adapter_64_ms": ms(direct_small),
        "by_in_flight": by_in_flight,
        "by_size": by_size,
    }


def main() -> None:
    ensure_project_venv()
    cli = parser(__doc__.split("\n\n")[0])
    cli.add_argument("--in-flight", type=int, nargs="+", default=None, help="points (1 8 64 512)")
    cli.add_argument("--sizes", nargs="+", default=None, help="sizes (256x256 … 2048x2048)")
    cli.add_argument("--per-point", type=int, default=None, help="jobs per point (100; quick 40)")
    args = cli.parse_args()
    in_flights = args.in_flight or ([1, 8, 64] if args.quick else [1, 8, 64, 512])
    sizes = args.sizes or (
        ["256x256", "1024x1024"] if args.quick else ["256x256", "512x512", "1024x1024", "2048x2048"]
    )
    per_point = args.per_point or (40 if args.quick else 100)
    result = asyncio.run(measure(in_flights, sizes, per_point, env_of(args.env)))
    write_result("scaling", result, args.out, args.quick)


if __name__ == "__main__":
    main()
