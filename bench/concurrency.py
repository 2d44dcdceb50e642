"""Concurrency: 5,000 jobs in flight against a provider that takes 20 s (the offline adapter's
`delay_s` option). Every job must land; reports the wall time, how long each job waited before
its provider call started, and the peak RSS of every process (sampled from /proc, and the
kernel's own high-water mark VmHWM).

    uv run python -m bench.concurrency            # 5,000 jobs, delay 20 s, at most 15 min
    uv run python -m bench.concurrency --quick    # 300 jobs, delay 5 s

The worker runs `ATELIER_WORKERS_CONCURRENCY` provider calls at once: as many as there are
jobs, since the target is that every provider call starts within 5 s of its submission, so all
5,000 wait on the provider together (coroutines waiting on HTTP; the tasks themselves stay in
JetStream until acked, so a crash loses none).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from atelier_devstack.stack import WorkerSpec
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


async def measure(
    jobs: int, delay_s: float, concurrency: int, budget_s: float, env: dict[str, str]
) -> dict[str, Any]:
    worker = WorkerSpec("offline", env={"ATELIER_WORKERS_CONCURRENCY": str(concurrency)})
    with bench_stack("concurrency", extra_env=env, workers=[worker]) as bench:
        procs = ProcessWatch(bench.stack)
        procs.start_sampling(0.5)
        async with JobWatch(bench.info.nats_url) as watch:
            submitter = Submitter(bench, watch, connections=32)
            cpu_before = procs.cpu()
            started = time.monotonic()
            deadline = started + budget_s
            try:
                queue: asyncio.Queue[int] = asyncio.Queue()
                for i in range(jobs):
                    queue.put_nowait(i)
                ids: list[str] = []

                async def submit_lane() -> None:
                    while not queue.empty() and time.monotonic() < deadline:
                        queue.get_nowait()
                        job_id, _ = await submitter.submit(options={"delay_s": delay_s})
                        ids.append(job_id)

                await asyncio.gather(*(submit_lane() for _ in range(32)))
                submitted_in = time.monotonic() - started
                print(f"{len(ids)} jobs submitted in {submitted_in:.1f}s", flush=True)
                peak_waiting = 0
                while time.monotonic() < deadline:
                    done = sum(1 for job_id in ids if watch.jobs[job_id].final_at is not None)
                    peak_waiting = max(peak_waiting, len(ids) - done)
                    if done == len(ids):
                        break
                    await asyncio.sleep(1.0)
                wall = time.monotonic() - started
                cpu = cpu_delta(cpu_before, procs.cpu())
            finally:
                await submitter.aclose()
                procs.stop_sampling()
                hwm = procs.hwm_kb()
    records = [watch.jobs[job_id] for job_id in ids]
    landed = [r for r in records if r.status == "completed"]
    to_start = [r.started_at - r.submitted_at for r in records if r.started_at and r.submitted_at]
    to_land = [r.final_at - r.submitted_at for r in landed if r.final_at and r.submitted_at]
    # Provider calls running at once, from the started/landed times of each job.
    edges = sorted(
        [(r.started_at, 1) for r in records if r.started_at]
        + [(r.final_at, -1) for r in records if r.started_at and r.final_at]
    )
    running = peak_running = 0
    for _, step in edges:
        running += step
        peak_running = max(peak_running, running)
    images = len(landed)
    return {
        "env": env,
        "submissions_refused": {str(k): v for k, v in submitter.refusals.items()},
        "submissions_retried_after_connection_errors": dict(submitter.transport_retries),
        "jobs": jobs,
        "submitted": len(ids),
        "provider_delay_s": delay_s,
        "worker_concurrency": concurrency,
        "budget_s": budget_s,
        "submit_wall_s": round(submitted_in, 1),
        "wall_s": round(wall, 1),
        "landed": images,
        "not_landed": len(ids) - images,
        "statuses": dict(Counter(str(r.status) for r in records)),
        "peak_jobs_in_flight": peak_waiting,
        "peak_provider_calls_running": peak_running,
        "submit_to_provider_start_ms": ms(percentiles(to_start)),
        "submit_to_landed_ms": ms(percentiles(to_land)),
        "overhead_beyond_delay_ms": ms(percentiles([t - delay_s for t in to_land])),
        "started_within_5s": sum(1 for t in to_start if t <= 5.0),
        "peak_rss_mib_sampled": {k: round(v / 1024, 1) for k, v in procs.peak_rss_kb.items()},
        "peak_rss_mib_vmhwm": {k: round(v / 1024, 1) for k, v in hwm.items()},
        "cpu_s": cpu,
        "services_cpu_ms_per_image": round(
            sum(v for k, v in cpu.items() if k != "bench-client") * 1000 / max(images, 1), 2
        ),
        "targets": {
            "all_landed": images == jobs,
            "every_call_started_within_5s": len(to_start) == jobs
            and all(t <= 5.0 for t in to_start),
        },
    }


def main() -> None:
    ensure_project_venv()
    cli = parser(__doc__.split("\n\n")[0])
    cli.add_argument("--jobs", type=int, default=None, help="jobs (default 5000; quick 300)")
    cli.add_argument("--delay", type=float, default=None, help="provider seconds (20; quick 5)")
    cli.add_argument(
        "--concurrency", type=int, default=None, help="worker provider calls at once (= jobs)"
    )
    cli.add_argument("--budget", type=float, default=900, help="give up after this many seconds")
    args = cli.parse_args()
    jobs = args.jobs or (300 if args.quick else 5000)
    delay = args.delay if args.delay is not None else (5.0 if args.quick else 20.0)
    concurrency = args.concurrency or jobs
    result = asyncio.run(measure(jobs, delay, concurrency, args.budget, env_of(args.env)))
    print(
        f"{result['landed']}/{result['jobs']} landed in {result['wall_s']} s; provider start p50 "
        f"{result['submit_to_provider_start_ms'].get('p50')} ms, max "
        f"{result['submit_to_provider_start_ms'].get('max')} ms"
    )
    write_result("concurrency", result, args.out, args.quick)


if __name__ == "__main__":
    main()
