"""Watchers: what 1,000 SSE streams open at once cost one gateway process (issue 17): its RSS and
CPU (`utime + stime` from /proc) with no stream, while the streams open, with all of them open
and idle, while their jobs end and events flow, and once they are closed.

    uv run python -m bench.watchers            # 1,000 streams, 30 s idle window
    uv run python -m bench.watchers --quick    # 100 streams, 5 s idle window

The streams: four fifths on single jobs (five on each job) and one fifth on ten projects, as a
media tab and a generation dialog per writer would hold them, all opened at once. Their jobs are
submitted first and held at the offline provider (`delay_s`) until the idle window is over, so
no event crosses the streams in it. What an idle stream still costs is in it: a ping every 15 s
(`ATELIER_GATEWAY_SSE_PING_S`) and, for a job stream, one re-read of its job from dispatch after
30 s without an event (`ATELIER_GATEWAY_SSE_RESYNC_S`); the window starts 2 s after the streams
opened and lasts 30 s, so it holds two pings and one re-read of every stream. Then the jobs end,
a second apart in ten waves, and every job's last events reach its five job streams and its
project's twenty project streams. Every job stream must end on a final status and every project
stream must see every job of its project end.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx

from atelier_devstack.stack import WorkerSpec
from bench.common import (
    FINAL,
    JobWatch,
    ProcessWatch,
    Submitter,
    bench_stack,
    cpu_delta,
    ensure_project_venv,
    env_of,
    parser,
    percentiles,
    rss_kb,
    write_result,
)

PROJECTS = 10
STREAMS_PER_JOB = 5
PING_S = 15.0  # the gateway's default `sse_ping_s`
RESYNC_S = 30.0  # its default `sse_resync_s`
WAVES = 10  # the held jobs end one wave a second
SETTLE_S = 2.0  # after the last stream opened, before the idle window


@dataclass
class Stream:
    path: str
    project: str
    job_id: str | None = None  # None: a project stream
    headers_after_s: float | None = None
    events: int = 0
    finals: set[str] | None = None  # jobs seen ending (project streams)
    last_status: str | None = None
    ended_by_server: bool = False


async def read_stream(
    client: httpx.AsyncClient, stream: Stream, started: float, stop: asyncio.Event
) -> None:
    """Counts `status` events until the server ends the stream or `stop` is set."""
    async with client.stream("GET", stream.path) as response:
        response.raise_for_status()
        stream.headers_after_s = time.monotonic() - started
        lines = aiter(response.aiter_lines())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while True:
                line_read = asyncio.ensure_future(anext(lines, None))
                await asyncio.wait({line_read, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if stopped.done():
                    line_read.cancel()
                    return
                line = line_read.result()
                if line is None:
                    stream.ended_by_server = True
                    return
                if not line.startswith("data:"):
                    continue
                job = json.loads(line.removeprefix("data:"))
                stream.events += 1
                stream.last_status = job["status"]
                if stream.finals is not None and job["status"] in FINAL:
                    stream.finals.add(job["id"])
        finally:
            stopped.cancel()


def gateway_state(url: str, pid: int) -> dict[str, float]:
    """Status subscriptions open (the gateway's own gauge), open descriptors, VmRSS in MiB."""
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    held = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("atelier_status_subscriptions_open ")
    )
    return {
        "subscriptions": held,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "rss_mib": round(rss_kb(pid)[0] / 1024, 1),
    }


class Phases:
    """CPU seconds of every process and wall time between marks."""

    def __init__(self, procs: ProcessWatch) -> None:
        self.procs = procs
        self.results: dict[str, dict[str, Any]] = {}
        self._cpu = procs.cpu()
        self._at = time.monotonic()

    def mark(self, name: str, **figures: Any) -> dict[str, Any]:
        cpu, now = self.procs.cpu(), time.monotonic()
        delta = cpu_delta(self._cpu, cpu)
        wall = now - self._at
        self.results[name] = {
            "wall_s": round(wall, 2),
            "gateway_cpu_s": delta["gateway"],
            "gateway_cores": round(delta["gateway"] / wall, 3),
            "cpu_s": {k: v for k, v in delta.items() if v >= 0.005},
            **figures,
        }
        self._cpu, self._at = cpu, now
        return self.results[name]


async def measure(streams: int, idle_s: float, env: dict[str, str]) -> dict[str, Any]:
    project_streams = streams // 5
    job_streams = streams - project_streams
    jobs = max(1, job_streams // STREAMS_PER_JOB)
    # Held long enough to cover opening every stream, a settling pause and the idle window.
    hold_s = idle_s + 15.0
    worker = WorkerSpec("offline", env={"ATELIER_WORKERS_CONCURRENCY": str(2 * jobs)})
    with bench_stack("watchers", extra_env=env, workers=[worker]) as bench:
        info = bench.info
        pid = bench.stack.supervisor.process("gateway").pid
        state = await asyncio.to_thread(gateway_state, info.gateway_url, pid)
        procs = ProcessWatch(bench.stack)
        projects = [f"watch-{i}" for i in range(PROJECTS)]
        token = bench.stack.mint_token("watcher", projects)
        unbounded = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        # One pool per project: httpx hands out connections slowly from one large pool.
        clients = {
            p: httpx.AsyncClient(
                base_url=info.gateway_url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=httpx.Timeout(hold_s + 120, connect=30),
                limits=unbounded,
            )
            for p in projects
        }
        stop = asyncio.Event()
        readers: list[asyncio.Task[None]] = []
        try:
            async with JobWatch(info.nats_url) as watch:
                await asyncio.sleep(idle_s)  # the stack settles after its start
                phases = Phases(procs)
                await asyncio.sleep(idle_s)
                no_streams = phases.mark("idle_no_streams", **state)

                # The jobs, held at the provider; a writer per project.
                submitters = [
                    Submitter(bench, watch, connections=8, token=token, project=p) for p in projects
                ]
                submitted = await asyncio.gather(
                    *(
                        submitters[n % PROJECTS].submit(
                            options={"delay_s": hold_s + n % WAVES},
                            size="256x256",
                            count=1 + n % 2,
                        )
                        for n in range(jobs)
                    )
                )
                for submitter in submitters:
                    await submitter.aclose()
                by_project: dict[str, set[str]] = {p: set() for p in projects}
                for n, (job_id, _) in enumerate(submitted):
                    by_project[projects[n % PROJECTS]].add(job_id)
                while True:  # every provider call started: the jobs are held
                    if all(record.started_at for _, record in submitted):
                        break
                    await asyncio.sleep(0.2)
                phases.mark("submitting_jobs", jobs=jobs)

                # Every stream at once.
                all_streams = [
                    Stream(f"/v1/projects/{p}/generations/events", p, finals=set())
                    for p in (projects[i % PROJECTS] for i in range(project_streams))
                ]
                project_side = list(all_streams)
                for n in range(job_streams):
                    job_id = submitted[n % jobs][0]
                    project = projects[(n % jobs) % PROJECTS]
                    all_streams.append(Stream(f"/v1/generations/{job_id}/events", project, job_id))
                started = time.monotonic()
                readers = [
                    asyncio.create_task(read_stream(clients[s.project], s, started, stop))
                    for s in all_streams
                ]
                while any(s.headers_after_s is None for s in all_streams):
                    assert all(not r.done() for r in readers), "a stream failed to open"
                    assert time.monotonic() - started < 120, "streams did not open in 120 s"
                    await asyncio.sleep(0.05)
                opened_s = time.monotonic() - started
                await asyncio.sleep(SETTLE_S)  # their first events
                state = await asyncio.to_thread(gateway_state, info.gateway_url, pid)
                headers = percentiles([s.headers_after_s or 0 for s in all_streams])
                opening = phases.mark(
                    "opening",
                    all_open_after_s=round(opened_s, 2),
                    headers_after_s={k: round(v, 2) for k, v in headers.items()},
                    **state,
                )

                events_before = sum(s.events for s in all_streams)
                procs.start_sampling(0.5)
                await asyncio.sleep(idle_s)
                state = await asyncio.to_thread(gateway_state, info.gateway_url, pid)
                idle = phases.mark(
                    "idle_streams_open",
                    events_in_window=sum(s.events for s in all_streams) - events_before,
                    **state,
                )
                ended_early = sum(1 for _, record in submitted if record.final_at is not None)
                deadline = time.monotonic() + hold_s + WAVES + 120
                while time.monotonic() < deadline:  # still held: nothing but pings
                    if any(record.final_at for _, record in submitted):
                        break
                    await asyncio.sleep(0.05)
                phases.mark("idle_until_the_first_job_ends")

                # The held jobs end, a wave a second; every stream carries their last events.
                events_before = sum(s.events for s in all_streams)
                while time.monotonic() < deadline:
                    jobs_done = all(r.done() for r in readers[project_streams:])
                    if jobs_done and all(saw_every_end(s, by_project) for s in project_side):
                        break
                    await asyncio.sleep(0.2)
                procs.stop_sampling()
                delivered = sum(s.events for s in all_streams) - events_before
                running = phases.mark(
                    "jobs_ending",
                    events_delivered=delivered,
                    peak_rss_mib=round(procs.peak_rss_kb["gateway"] / 1024, 1),
                )

                stop.set()
                await asyncio.gather(*readers, return_exceptions=True)
                for client in clients.values():
                    await client.aclose()
                closing_started = time.monotonic()
                while True:
                    state = await asyncio.to_thread(gateway_state, info.gateway_url, pid)
                    if state["subscriptions"] == 0 or time.monotonic() - closing_started > 30:
                        break
                    await asyncio.sleep(0.2)
                closed = phases.mark(
                    "closed", settled_after_s=round(time.monotonic() - closing_started, 2), **state
                )
        finally:
            stop.set()
            for task in readers:
                task.cancel()
            for client in clients.values():
                await client.aclose()

    job_ended = [s for s in all_streams[project_streams:] if s.last_status in FINAL]
    project_complete = [s for s in project_side if saw_every_end(s, by_project)]
    per_stream_kib = (idle["rss_mib"] - no_streams["rss_mib"]) * 1024 / streams
    return {
        "env": env,
        "streams": streams,
        "job_streams": job_streams,
        "jobs": jobs,
        "streams_per_job": STREAMS_PER_JOB,
        "project_streams": project_streams,
        "projects": PROJECTS,
        "ping_s": PING_S,
        "resync_s": RESYNC_S,
        "idle_window_s": idle_s,
        # What an idle stream does in the window (the streams opened within a few seconds).
        "pings_per_stream_in_idle_window": int((SETTLE_S + idle_s) // PING_S),
        "rereads_per_job_stream_in_idle_window": int((SETTLE_S + idle_s) // RESYNC_S),
        "jobs_held_s": hold_s,
        "jobs_ended_before_the_idle_window_did": ended_early,
        "phases": phases.results,
        "gateway": {
            "rss_mib_no_streams": no_streams["rss_mib"],
            "rss_mib_streams_open": idle["rss_mib"],
            "rss_kib_per_stream": round(per_stream_kib, 1),
            "rss_mib_jobs_ending_peak": running["peak_rss_mib"],
            "rss_mib_after_close": closed["rss_mib"],
            "cores_no_streams": no_streams["gateway_cores"],
            "cores_streams_open_idle": idle["gateway_cores"],
            "cpu_ms_per_stream_opened": round(opening["gateway_cpu_s"] * 1000 / streams, 2),
            "cores_jobs_ending": running["gateway_cores"],
            "cpu_us_per_event_delivered": round(
                running["gateway_cpu_s"] * 1e6 / max(running["events_delivered"], 1), 1
            ),
            "subscriptions_open": idle["subscriptions"],
            "subscriptions_after_close": closed["subscriptions"],
            "fds_streams_open": idle["fds"],
            "fds_after_close": closed["fds"],
        },
        "job_streams_ended_on_a_final_status": len(job_ended),
        "project_streams_saw_every_job_end": len(project_complete),
        "events_received": sum(s.events for s in all_streams),
        "targets": {
            "every_stream_complete": len(job_ended) == job_streams
            and len(project_complete) == project_streams,
            "idle_window_idle": ended_early == 0 and idle["events_in_window"] == 0,
            "all_open_at_once": idle["subscriptions"] == streams,
            "subscriptions_given_back": closed["subscriptions"] == 0,
        },
    }


def saw_every_end(stream: Stream, by_project: dict[str, set[str]]) -> bool:
    """A project stream that saw every job of its project end."""
    return stream.finals is not None and stream.finals >= by_project[stream.project]


def main() -> None:
    ensure_project_venv()
    cli = parser(__doc__.split("\n\n")[0])
    cli.add_argument("--streams", type=int, default=None, help="streams (1000; quick 100)")
    cli.add_argument("--idle", type=float, default=None, help="idle window, s (30; quick 5)")
    args = cli.parse_args()
    streams = args.streams or (100 if args.quick else 1000)
    idle_s = args.idle or (5.0 if args.quick else RESYNC_S)
    result = asyncio.run(measure(streams, idle_s, env_of(args.env)))
    g = result["gateway"]
    print(
        f"{streams} streams: gateway RSS {g['rss_mib_no_streams']} → {g['rss_mib_streams_open']} "
        f"MiB ({g['rss_kib_per_stream']} KiB a stream), {g['rss_mib_after_close']} MiB closed; "
        f"CPU idle {g['cores_streams_open_idle']} cores, opening {g['cpu_ms_per_stream_opened']} "
        f"ms a stream, {g['cpu_us_per_event_delivered']} µs an event; targets {result['targets']}"
    )
    write_result("watchers", result, args.out, args.quick)


if __name__ == "__main__":
    main()
