"""Profile the hot path: drive a steady load of small offline jobs through the real stack while
py-spy samples every service, then print where each one spends its CPU.

py-spy comes from PyPI into the bench venv (never the project's):

    uv venv bench/.venv-litellm && uv pip install --python bench/.venv-litellm/bin/python py-spy
    uv run python -m bench.profile_hot_path              # 20 s of sampling, 8 jobs in flight
    uv run python -m bench.profile_hot_path --quick      # 5 s

Collapsed stacks go to bench/results/profiles/<service>.txt.tmp (open them in speedscope); the
summary (top functions by inclusive share, per service) to bench/results/profile.json.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS_DIR,
    ROOT,
    JobWatch,
    ProcessWatch,
    Submitter,
    bench_stack,
    cpu_delta,
    ensure_project_venv,
    parser,
    wait_landed,
    write_result,
)

PY_SPY = ROOT / "bench" / ".venv-litellm" / "bin" / "py-spy"
SERVICES = ("gateway", "profiles", "context", "dispatch", "worker-offline", "media")
# Frames that say nothing about our code: the event loop waiting, the interpreter's start.
_IDLE = ("select (selectors.py", "_run_once (asyncio/base_events.py", "epoll")


def summarize(collapsed: Path, top: int) -> dict[str, Any]:
    """Inclusive share of samples per function (each function counted once per stack)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    busy = total - sum(c for f, c in own.items() if any(idle in f for idle in _IDLE))

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": f, "share_of_busy": round(c / max(busy, 1), 3)}
            for f, c in counter.most_common(top * 4)
            if not any(idle in f for idle in _IDLE)
        ][:top]

    return {
        "samples": total,
        "busy_samples": busy,
        "inclusive": share(inclusive),
        "self": share(own),
    }


async def drive(submitter: Submitter, seconds: float, in_flight: int) -> int:
    deadline = time.monotonic() + seconds
    landed = 0

    async def lane() -> None:
        nonlocal landed
        while time.monotonic() < deadline:
            _, record = await submitter.submit()
            if await wait_landed(record, 60):
                landed += 1

    await asyncio.gather(*(lane() for _ in range(in_flight)))
    return landed


async def run(seconds: float, in_flight: int, top: int, gil: bool) -> dict[str, Any]:
    out_dir = RESULTS_DIR / "profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    with bench_stack("profile") as bench:
        procs = ProcessWatch(bench.stack)
        async with JobWatch(bench.info.nats_url) as watch:
            submitter = Submitter(bench, watch)
            try:
                await drive(submitter, 3, in_flight)  # warm up
                spies = {
                    name: subprocess.Popen(  # noqa: ASYNC220 - py-spy runs beside the load
                        [
                            str(PY_SPY),
                            "record",
                            "--pid",
                            str(bench.stack.supervisor.process(name).pid),
                            "--duration",
                            str(int(seconds)),
                            "--rate",
                            "200",
                            "--format",
                            "raw",
                            "--nonblocking",
                            *(["--gil"] if gil else []),
                            "--output",
                            str(out_dir / f"{name}.txt.tmp"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    for name in SERVICES
                }
                cpu_before = procs.cpu()
                landed = await drive(submitter, seconds, in_flight)
                cpu = cpu_delta(cpu_before, procs.cpu())
                for spy in spies.values():
                    spy.wait(timeout=60)
            finally:
                await submitter.aclose()
    summaries = {
        name: summarize(out_dir / f"{name}.txt.tmp", top)
        for name in SERVICES
        if (out_dir / f"{name}.txt.tmp").exists()
    }
    return {
        "seconds": seconds,
        "in_flight": in_flight,
        "images": landed,
        "cpu_ms_per_image": {k: round(v * 1000 / max(landed, 1), 2) for k, v in cpu.items()},
        "profiles": summaries,
    }


def main() -> None:
    ensure_project_venv()
    cli = parser(__doc__.split("\n\n")[0])
    cli.add_argument("--seconds", type=float, default=None, help="sampling time (default 20)")
    cli.add_argument("--in-flight", type=int, default=8, help="jobs in flight (default 8)")
    cli.add_argument("--top", type=int, default=15, help="functions listed per service")
    cli.add_argument(
        "--gil", action="store_true", help="sample only threads holding the GIL (Python CPU)"
    )
    args = cli.parse_args()
    if not PY_SPY.exists():
        raise SystemExit(f"py-spy not found at {PY_SPY}; see --help")
    seconds = args.seconds or (5 if args.quick else 20)
    result = asyncio.run(run(seconds, args.in_flight, args.top, args.gil))
    for name, summary in result["profiles"].items():
        print(f"\n== {name}: {result['cpu_ms_per_image'].get(name)} ms CPU/image")
        for row in summary["inclusive"]:
            print(f"  {row['share_of_busy']:6.1%}  {row['function']}")
    write_result("profile", result, args.out, args.quick)


if __name__ == "__main__":
    main()
