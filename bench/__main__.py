"""`make bench`: every benchmark on the real stack, one after another, then the Markdown table in
docs/performance.md. Each one writes bench/results/<name>.json.

    uv run python -m bench                       # all of them (about 34-40 minutes on 2 cores)
    uv run python -m bench --quick               # a short pass of each (results as *.tmp)
    uv run python -m bench --only overhead peer  # some of them
    uv run python -m bench --report              # only rewrite docs/performance.md from results
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from bench.common import ROOT, ensure_project_venv, result_path
from bench.report import write_report

# name → the script and its arguments. A name other than its script's writes its result under
# that name (`--out`), so one script can give two results side by side.
BENCHMARKS: dict[str, tuple[str, ...]] = {
    "messaging_floor": ("messaging_floor",),  # first: about a minute, no stack
    "overhead": ("overhead",),
    "throughput": ("throughput",),
    "throughput_count4": ("throughput", "--count", "4"),
    "concurrency": ("concurrency",),
    "fairness": ("fairness",),  # a provider budget and two users (ADR 0020)
    "watchers": ("watchers",),  # 1,000 SSE streams on one gateway (issue 17)
    "peer": ("peer",),
    "scaling": ("scaling",),
}


def command(name: str, quick: bool) -> list[str]:
    script, *arguments = BENCHMARKS[name]
    if name != script:
        arguments += ["--out", str(result_path(name, quick).relative_to(ROOT))]
    return [sys.executable, "-m", f"bench.{script}", *arguments, *(["--quick"] if quick else [])]


def main() -> None:
    ensure_project_venv()
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--quick", action="store_true", help="a short pass of each benchmark")
    cli.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    cli.add_argument("--report", action="store_true", help="only write docs/performance.md")
    args = cli.parse_args()
    failed = []
    if not args.report:
        for name in args.only or BENCHMARKS:
            run = command(name, args.quick)
            print(f"\n=== {' '.join(run[2:])}", flush=True)
            if subprocess.run(run, cwd=ROOT).returncode != 0:
                failed.append(name)
    if not args.quick:
        print(f"wrote {write_report().relative_to(ROOT)}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
