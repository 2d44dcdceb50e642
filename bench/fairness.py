"""Fairness: one user's backlog against another user's few jobs, with a provider budget of
calls at once (ADR 0020) and without one, on the real stack (offline provider, 2 s a call).

    uv run python -m bench.fairness            # 5,000 jobs of A, B's 10 after 10 s, budget 50
    uv run python -m bench.fairness --quick    # 500 jobs of A, B's 10 after 3 s, budget 50

Two scenarios on one stack, one after the other:

- **budget**: the offline provider's budget set to 50 through the profiles admin API
  (`PUT /admin/v1/providers/offline/budget`). User A submits 5,000 1-image jobs as fast as the
  gateway takes them; 10 s after A's first, user B (the stack's second user, in their own
  project) submits 10. Targets: each of B's calls starts within 5 s of its submission; the
  provider never has more than 50 calls at once; every job of A lands.
- **no_budget**: the budget removed (`DELETE`), the same load again. Target: every call starts
  within 5 s of its submission.

The worker runs as many calls at once as there are jobs (`ATELIER_WORKERS_CONCURRENCY`), so the
only limit on calls is the budget. Each scenario gives up after 15 min (`--time-limit`).

How calls at once are counted: from what is observable on NATS, on one core-NATS subscription
to `gen.>`, so events are counted in the order the server delivered them. A call runs from the
worker's `gen.started` notice (published just before the provider call) to its `gen.completed`
or `gen.failed` (published once the image is stored): that window holds the call, so its peak is
never below the provider's. A task is *held* from the moment dispatch hands it to the provider's
queue (`gen.offline.requested`, the admission) to that same end: the budget bounds this too,
since dispatch counts a task against it from admission until its image lands, later still.

Where each job's wait before its call went, all seen on NATS from the same bench process: the
202; `jobs.enriched` (context is done); the job's first `generating` status (dispatch made its
tasks: with a budget they wait for their turn from here); `gen.offline.requested` (admitted, in
the provider's queue); `gen.started` (the worker took it).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import nats

from atelier_devstack.stack import WorkerSpec
from bench.common import (
    BenchStack,
    JobRecord,
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

PROVIDER = "offline"
TARGET_START_S = 5.0  # issue 16: every provider call starts within 5 s of its submission
SETTLE_S = 2.0  # dispatch follows the budget bucket "within a second"
LANES = 32  # A's submitters in parallel, over 32 connections (as concurrency.py)


@dataclass
class JobCalls:
    """What NATS shows of one job's way to its provider call (monotonic times, first seen)."""

    user: str | None = None
    enriched: float | None = None  # jobs.enriched: context is done, dispatch makes the tasks
    taken_in: float | None = None  # first "generating" status: dispatch made the tasks
    handed: float | None = None  # gen.offline.requested: dispatch admitted a task
    started: float | None = None  # gen.started: the worker begins the provider call
    ended: float | None = None  # gen.completed / gen.failed: the call and its storing are over


class CallWatch:
    """Every task's admission, call start and call end for one provider, from one subscription
    to `gen.>` (one subscription: its callbacks run in the order messages arrived), and each
    job's `jobs.enriched`. Keeps the running and held counts and their peaks as it goes."""

    def __init__(self, nats_url: str, provider: str) -> None:
        self.nats_url = nats_url
        self.requested = f"gen.{provider}.requested"
        self.provider = provider
        self.jobs: dict[str, JobCalls] = {}
        self.running = self.held = 0
        self.peak_running = self.peak_held = 0
        self.peak_running_at: float | None = None
        self.peak_held_at: float | None = None
        self._started: set[tuple[str, int]] = set()
        self._handed: set[tuple[str, int]] = set()
        self._ended: set[tuple[str, int]] = set()
        self._nc: Any = None

    def job(self, job_id: str) -> JobCalls:
        calls = self.jobs.get(job_id)
        if calls is None:
            calls = self.jobs[job_id] = JobCalls()
        return calls

    async def __aenter__(self) -> CallWatch:
        self._nc = await nats.connect(self.nats_url, connect_timeout=5)
        await self._nc.subscribe("gen.>", cb=self._on_gen)
        await self._nc.subscribe("jobs.enriched", cb=self._on_enriched)
        await self._nc.subscribe("jobs.status.>", cb=self._on_status)
        await self._nc.flush()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._nc.drain()

    async def _on_enriched(self, msg: Any) -> None:
        now = time.monotonic()
        calls = self.job(json.loads(msg.data)["job_id"])
        if calls.enriched is None:
            calls.enriched = now

    async def _on_status(self, msg: Any) -> None:
        # Dispatch publishes "generating" in the transaction that turns the enriched job into
        # tasks (queued for their turn, or handed over at once when there is no budget).
        if b'"generating"' not in msg.data:
            return
        now = time.monotonic()
        job = json.loads(msg.data)["job"]
        if job["status"] == "generating":
            calls = self.job(job["id"])
            if calls.taken_in is None:
                calls.taken_in = now

    async def _on_gen(self, msg: Any) -> None:
        now = time.monotonic()
        if msg.subject == self.requested:
            task = json.loads(msg.data)
            key = (task["task_id"], int(task.get("attempt", 1)))
            calls = self.job(task["job_id"])
            calls.user = task["user_id"]
            if calls.handed is None:
                calls.handed = now
            if key not in self._handed and key not in self._ended:
                self._handed.add(key)
                self.held += 1
                if self.held > self.peak_held:
                    self.peak_held, self.peak_held_at = self.held, now
        elif msg.subject == "gen.started":
            notice = json.loads(msg.data)
            if notice.get("provider") != self.provider:
                return
            key = (notice["task_id"], int(notice.get("attempt", 1)))
            calls = self.job(notice["job_id"])
            if calls.started is None:
                calls.started = now
            if key not in self._started and key not in self._ended:
                self._started.add(key)
                self.running += 1
                if self.running > self.peak_running:
                    self.peak_running, self.peak_running_at = self.running, now
        elif msg.subject in ("gen.completed", "gen.failed"):
            task = json.loads(msg.data)["task"]
            if task["profile"]["provider"] != self.provider:
                return
            key = (task["task_id"], int(task.get("attempt", 1)))
            if key in self._ended:
                return  # a redelivered outcome
            self._ended.add(key)
            calls = self.job(task["job_id"])
            if calls.ended is None:
                calls.ended = now
            if key in self._started:
                self.running -= 1
            if key in self._handed:
                self.held -= 1


def _set_budget(bench: BenchStack, budget: int | None) -> int | None:
    """Set (or with None remove) the provider's budget as an admin does; returns what the
    profiles service then reads back."""
    path = f"/admin/v1/providers/{PROVIDER}/budget"
    with bench.admin() as admin:
        if budget is None:
            answer = admin.delete(path)
        else:
            answer = admin.put(path, json={"max_concurrent": budget})
        answer.raise_for_status()
        read = admin.get(path)
        read.raise_for_status()
    value = read.json()["max_concurrent"]
    if value != budget:
        raise RuntimeError(f"the {PROVIDER} budget reads {value!r} after setting {budget!r}")
    return None if value is None else int(value)


def _seconds(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round(end - start, 3)


def _s(stats: dict[str, float]) -> dict[str, float]:
    """Milliseconds → seconds (3 decimals) for the figures of `ms(percentiles(...))`."""
    return {k: (v if k == "n" else round(v / 1000, 3)) for k, v in stats.items()}


def _stats(values: list[float]) -> dict[str, float]:
    return _s(ms(percentiles(values)))


async def run_scenario(
    bench: BenchStack,
    procs: ProcessWatch,
    *,
    name: str,
    budget: int | None,
    a_jobs: int,
    b_jobs: int,
    b_after_s: float,
    delay_s: float,
    time_limit_s: float,
) -> dict[str, Any]:
    budget = _set_budget(bench, budget)
    await asyncio.sleep(SETTLE_S)
    print(f"--- {name}: budget {budget}, A {a_jobs} jobs, B {b_jobs} after {b_after_s:g} s")
    options = {"delay_s": delay_s}
    async with (
        JobWatch(bench.info.nats_url) as watch,
        CallWatch(bench.info.nats_url, PROVIDER) as calls,
    ):
        a_submitter = Submitter(bench, watch, connections=LANES)
        b_submitter = Submitter(
            bench,
            watch,
            connections=max(b_jobs, 1),
            token=bench.info.second_user_token,
            project=bench.info.projects["second_user"],
        )
        a_ids: list[str] = []
        b_ids: list[str] = []
        cpu_before = procs.cpu()
        started = time.monotonic()
        deadline = started + time_limit_s
        a_submitted_in = b_submitted_at = 0.0
        try:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(a_jobs):
                queue.put_nowait(i)

            async def a_lane() -> None:
                while not queue.empty() and time.monotonic() < deadline:
                    queue.get_nowait()
                    job_id, _ = await a_submitter.submit(options=options)
                    a_ids.append(job_id)

            async def submit_a() -> None:
                nonlocal a_submitted_in
                await asyncio.gather(*(a_lane() for _ in range(LANES)))
                a_submitted_in = time.monotonic() - started
                print(f"A: {len(a_ids)} jobs submitted in {a_submitted_in:.1f} s", flush=True)

            async def submit_b() -> None:
                nonlocal b_submitted_at
                await asyncio.sleep(max(0.0, started + b_after_s - time.monotonic()))
                b_submitted_at = time.monotonic() - started
                done = await asyncio.gather(
                    *(b_submitter.submit(options=options) for _ in range(b_jobs))
                )
                b_ids.extend(job_id for job_id, _ in done)
                print(
                    f"B: {len(b_ids)} jobs submitted at {b_submitted_at:.1f} s "
                    f"(A had {len(a_ids)} in)",
                    flush=True,
                )

            await asyncio.gather(submit_a(), submit_b())
            ids = a_ids + b_ids
            last_report = time.monotonic()
            while True:
                done = sum(1 for job_id in ids if watch.jobs[job_id].final_at is not None)
                if done == len(ids):
                    break
                if time.monotonic() >= deadline:
                    break
                if time.monotonic() - last_report >= 15:
                    last_report = time.monotonic()
                    print(
                        f"  {time.monotonic() - started:.0f} s: {done}/{len(ids)} landed, "
                        f"{calls.running} calls running (peak {calls.peak_running}), "
                        f"{calls.held} held (peak {calls.peak_held})",
                        flush=True,
                    )
                await asyncio.sleep(0.5)
            wall = time.monotonic() - started
            cpu = cpu_delta(cpu_before, procs.cpu())
        finally:
            await a_submitter.aclose()
            await b_submitter.aclose()

    def records(job_ids: list[str]) -> list[tuple[str, JobRecord, JobCalls]]:
        return [(job_id, watch.jobs[job_id], calls.job(job_id)) for job_id in job_ids]

    a_records, b_records = records(a_ids), records(b_ids)
    everyone = a_records + b_records
    not_landed = sum(1 for _, r, _ in everyone if r.final_at is None)
    aborted = None
    if not_landed:
        aborted = (
            f"scenario {name!r} passed its {time_limit_s:g} s limit with {not_landed} of "
            f"{len(everyone)} jobs not landed"
        )

    def to_start(rows: list[tuple[str, JobRecord, JobCalls]]) -> list[float]:
        return [
            c.started - r.submitted_at
            for _, r, c in rows
            if c.started is not None and r.submitted_at is not None
        ]

    def stages(rows: list[tuple[str, JobRecord, JobCalls]]) -> dict[str, dict[str, float]]:
        """Where the wait before the call went, each stage from submission (seconds)."""

        def since_submit(pick: Any) -> list[float]:
            return [
                pick(r, c) - r.submitted_at
                for _, r, c in rows
                if r.submitted_at is not None and pick(r, c) is not None
            ]

        return {
            "to_202": _stats(since_submit(lambda r, c: r.accepted_at)),
            "to_enriched": _stats(since_submit(lambda r, c: c.enriched)),
            "to_taken_in_by_dispatch": _stats(since_submit(lambda r, c: c.taken_in)),
            "to_handed_to_provider_queue": _stats(since_submit(lambda r, c: c.handed)),
            "to_call_start": _stats(since_submit(lambda r, c: c.started)),
            "to_landed": _stats(since_submit(lambda r, c: r.final_at)),
        }

    a_start, b_start, all_start = to_start(a_records), to_start(b_records), to_start(everyone)
    a_landed = [r for _, r, _ in a_records if r.status == "completed"]
    b_landed = [r for _, r, _ in b_records if r.status == "completed"]
    b_jobs_detail = [
        {
            "submitted_at_s": _seconds(started, r.submitted_at),
            "to_202_s": _seconds(r.submitted_at, r.accepted_at),
            "to_enriched_s": _seconds(r.submitted_at, c.enriched),
            "to_taken_in_s": _seconds(r.submitted_at, c.taken_in),
            "to_handed_s": _seconds(r.submitted_at, c.handed),
            "to_call_start_s": _seconds(r.submitted_at, c.started),
            "to_landed_s": _seconds(r.submitted_at, r.final_at),
            "status": r.status,
        }
        for _, r, c in b_records
    ]
    a_last_landed = max((r.final_at for r in a_landed if r.final_at), default=None)
    result: dict[str, Any] = {
        "scenario": name,
        "budget": budget,
        "aborted": aborted,
        "submissions_refused": {
            "A": {str(k): v for k, v in a_submitter.refusals.items()},
            "B": {str(k): v for k, v in b_submitter.refusals.items()},
        },
        "submissions_retried_after_connection_errors": {
            "A": dict(a_submitter.transport_retries),
            "B": dict(b_submitter.transport_retries),
        },
        "wall_s": round(wall, 1),
        "a": {
            "jobs": a_jobs,
            "submitted": len(a_ids),
            "submit_wall_s": round(a_submitted_in, 1),
            "landed": len(a_landed),
            "statuses": dict(Counter(str(r.status) for _, r, _ in a_records)),
            "wall_to_last_landed_s": _seconds(started, a_last_landed),
            "images_per_s": round(len(a_landed) / (a_last_landed - started), 1)
            if a_last_landed
            else None,
            "submit_to_call_start_s": _stats(a_start),
            "stages_s": stages(a_records),
        },
        "b": {
            "jobs": b_jobs,
            "submitted": len(b_ids),
            "submitted_at_s": round(b_submitted_at, 1),
            "a_accepted_before_b": sum(
                1
                for _, r, _ in a_records
                if r.accepted_at is not None and r.accepted_at < started + b_submitted_at
            ),
            "landed": len(b_landed),
            "submit_to_call_start_s": sorted(round(t, 3) for t in b_start),
            "submit_to_call_start_max_s": round(max(b_start), 3) if b_start else None,
            "stages_s": stages(b_records),
            "jobs_detail": b_jobs_detail,
        },
        "all_calls_submit_to_start_s": _stats(all_start),
        "calls_started_within_5s": sum(1 for t in all_start if t <= TARGET_START_S),
        "calls_started": len(all_start),
        "peak_calls_running": calls.peak_running,
        "peak_calls_running_at_s": _seconds(started, calls.peak_running_at),
        "peak_tasks_held": calls.peak_held,
        "peak_tasks_held_at_s": _seconds(started, calls.peak_held_at),
        "cpu_s": cpu,
    }
    jobs_total = a_jobs + b_jobs
    targets: dict[str, bool] = {
        "all_landed": len(a_landed) + len(b_landed) == jobs_total,
        "every_call_started_within_5s": len(all_start) == jobs_total
        and all(t <= TARGET_START_S for t in all_start),
    }
    if b_jobs:
        targets["b_calls_started_within_5s"] = len(b_start) == b_jobs and all(
            t <= TARGET_START_S for t in b_start
        )
    if budget is not None:
        targets["budget_never_exceeded"] = (
            calls.peak_running <= budget and calls.peak_held <= budget
        )
    result["targets"] = targets
    print(
        f"{name}: A {len(a_landed)}/{a_jobs} landed in {result['a']['wall_to_last_landed_s']} s; "
        f"B call starts {result['b']['submit_to_call_start_s']} s after submission; all calls "
        f"p50 {result['all_calls_submit_to_start_s'].get('p50')} s, max "
        f"{result['all_calls_submit_to_start_s'].get('max')} s; peak calls {calls.peak_running}, "
        f"held {calls.peak_held} (budget {budget})",
        flush=True,
    )
    return result


async def measure(
    *,
    a_jobs: int,
    b_jobs: int,
    b_after_s: float,
    budget: int,
    delay_s: float,
    concurrency: int,
    time_limit_s: float,
    scenarios: list[str],
    env: dict[str, str],
) -> dict[str, Any]:
    worker = WorkerSpec(PROVIDER, env={"ATELIER_WORKERS_CONCURRENCY": str(concurrency)})
    results: list[dict[str, Any]] = []
    with bench_stack("fairness", extra_env=env, workers=[worker]) as bench:
        procs = ProcessWatch(bench.stack)
        for name in scenarios:
            result = await run_scenario(
                bench,
                procs,
                name=name,
                budget=budget if name == "budget" else None,
                a_jobs=a_jobs,
                b_jobs=b_jobs,
                b_after_s=b_after_s,
                delay_s=delay_s,
                time_limit_s=time_limit_s,
            )
            results.append(result)
            if result["aborted"]:
                print(f"fairness: {result['aborted']}; giving up", file=sys.stderr, flush=True)
                break
    return {
        "env": env,
        "provider": PROVIDER,
        "provider_delay_s": delay_s,
        "worker_concurrency": concurrency,
        "a_jobs": a_jobs,
        "b_jobs": b_jobs,
        "b_after_s": b_after_s,
        "budget": budget,
        "time_limit_s": time_limit_s,
        "target_start_s": TARGET_START_S,
        "calls_counted_by": "one core-NATS subscription to gen.>: a call from gen.started to "
        "gen.completed/gen.failed; a task held from gen.offline.requested (admission) to that "
        "same end; counted in delivery order",
        "scenarios": {r["scenario"]: r for r in results},
        "aborted": next((r["aborted"] for r in results if r["aborted"]), None),
    }


def main() -> None:
    ensure_project_venv()
    cli = parser(__doc__.split("\n\n")[0])
    cli.add_argument("--jobs", type=int, default=None, help="A's jobs (default 5000; quick 500)")
    cli.add_argument("--b-jobs", type=int, default=10, help="B's jobs (default 10)")
    cli.add_argument(
        "--b-after", type=float, default=None, help="B submits this many s after A (10; quick 3)"
    )
    cli.add_argument("--budget", type=int, default=50, help="the provider's calls at once (50)")
    cli.add_argument("--delay", type=float, default=2.0, help="provider seconds per call (2)")
    cli.add_argument(
        "--concurrency", type=int, default=None, help="worker calls at once (A's + B's jobs)"
    )
    cli.add_argument(
        "--time-limit", type=float, default=900, help="give up a scenario after this many s"
    )
    cli.add_argument(
        "--scenarios",
        nargs="+",
        choices=("budget", "no_budget"),
        default=["budget", "no_budget"],
        help="which to run, in order (both)",
    )
    args = cli.parse_args()
    a_jobs = args.jobs or (500 if args.quick else 5000)
    b_after = args.b_after if args.b_after is not None else (3.0 if args.quick else 10.0)
    result = asyncio.run(
        measure(
            a_jobs=a_jobs,
            b_jobs=args.b_jobs,
            b_after_s=b_after,
            budget=args.budget,
            delay_s=args.delay,
            concurrency=args.concurrency or max(a_jobs + args.b_jobs, args.budget),
            time_limit_s=args.time_limit,
            scenarios=args.scenarios,
            env=env_of(args.env),
        )
    )
    write_result("fairness", result, args.out, args.quick)
    if result["aborted"]:
        sys.exit(f"fairness: {result['aborted']}")


if __name__ == "__main__":
    main()
