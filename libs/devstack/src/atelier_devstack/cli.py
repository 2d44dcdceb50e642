"""`atelier-dev run`: the whole system locally, in one command."""

from __future__ import annotations

import argparse
import os
import shutil
import time

from atelier_devstack.stack import RunInfo, Stack, StackConfig, WorkerSpec, default_var_dir
from atelier_devstack.watchdog import CrashLoopError


def _curl_example(info_gateway: str, token: str, profile_id: str | None) -> str:
    body = (
        '{"project": "demo-project", "profile_id": "' + str(profile_id) + '", '
        '"prompt": "A lighthouse on a cliff at dusk", "count": 2}'
    )
    return f"""
  TOKEN={token}
  curl -s -X POST {info_gateway}/v1/generations \\
       -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \\
       -d '{body}'
  # → {{"id": "<job id>", "status": "queued", ...}}; then watch it and fetch the image:
  curl -N {info_gateway}/v1/generations/<job id>/events -H "Authorization: Bearer $TOKEN"
  curl -s {info_gateway}/v1/generations/<job id> -H "Authorization: Bearer $TOKEN"
  curl -s -o image.png {info_gateway}/v1/media/<media id>/content -H "Authorization: Bearer $TOKEN"
"""


def _app_settings(info: RunInfo) -> str:
    """What the app's (Inkweld's) frontend needs to talk to this run, Atelier alone."""
    return f"""  Inkweld app, Atelier alone (docs/inkweld-deployment.md), its frontend settings:
    API URL (the app's server URL)  {info.gateway_url}   (every /api/v1 route is served here)
    bearer token (app admin)        {info.app_admin_token}
    project                         {info.app_project}
  The offline profile shows there as provider "stable-diffusion"; the token opens the app's
  admin pages (profiles, audits) and generates in {info.app_project} (run.json: app_admin_token)."""


def run(args: argparse.Namespace) -> int:
    var_dir = default_var_dir() if args.var_dir is None else args.var_dir
    cluster = args.command == "cluster"
    if cluster:
        var_dir = var_dir.with_name(var_dir.name + "-cluster") if args.var_dir is None else var_dir
    database_url = os.environ.get("DATABASE_URL")
    if cluster and not (database_url or "").startswith("postgresql"):
        print(
            "atelier-dev cluster runs two processes of every service on one PostgreSQL "
            "database: set DATABASE_URL, e.g.\n"
            "  DATABASE_URL=postgresql://postgres@127.0.0.1:5432/atelier make cluster\n"
            "(SQLite serves one process per service; `make run` is the embedded default)."
        )
        return 2
    if args.fresh and var_dir.exists():
        shutil.rmtree(var_dir)
    workers = [WorkerSpec(p) for p in args.worker]
    stack = Stack(
        StackConfig(
            var_dir=var_dir,
            workers=workers,
            database_url=database_url,
            json_logs=True,
            nats_nodes=3 if cluster else 1,
            service_replicas=2 if cluster else 1,
            # The cluster's ports are all picked free: the standard ones are the single run's.
            prefer_standard_ports=not cluster,
        )
    )
    stack.supervisor.stop_on_exit()
    print(f"starting Atelier (state and logs under {var_dir.resolve()}) ...", flush=True)
    started = time.monotonic()
    info = stack.start()
    example = _curl_example(info.gateway_url, info.user_token, info.profile_id)
    for name, (wanted, got) in info.replaced_ports.items():
        print(f"  note: port {wanted} for {name} is taken; using {got} instead")
    print(
        f"""
Atelier is ready in {time.monotonic() - started:.1f} s.

  Open the web page (signed in as the demo user; the token stays in that browser tab):
    {info.gateway_url}/#token={info.user_token}

  gateway (app API)   {info.gateway_url}      docs: {info.gateway_url}/docs
  profiles (admin)    {info.admin_url}      docs: {info.admin_url}/docs
  NATS                {info.nats_url}
  object storage      http://{info.s3_endpoint}
  logs                {stack.supervisor.log_dir}
  tokens and URLs     {(var_dir / "run.json").resolve()}
  demo profile id     {info.profile_id}

{_app_settings(info)}
  Inkweld app beside its own backend (production): see docs/inkweld-deployment.md
    (deploy/inkweld/Caddyfile sends only the image routes here)

  Command line: `.venv/bin/atelier --help` (reads {(var_dir / "run.json").resolve()})

Generate an image (user token for project "demo-project"):{example}
A process that dies is started again (the console says which and why); Ctrl-C stops everything.""",
        flush=True,
    )
    watchdog = stack.watchdog(say=lambda line: print(line, flush=True))
    try:
        while True:
            time.sleep(0.5)
            watchdog.check(time.monotonic())
    except CrashLoopError as exc:
        print(f"\n{exc}\nstopping ...", flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        stack.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="atelier-dev",
        description="Run Atelier locally: nats-server (JetStream), SeaweedFS (S3), every service "
        "as its own process on SQLite (or DATABASE_URL), and the offline provider.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="start everything and wait for Ctrl-C")
    cluster_parser = sub.add_parser(
        "cluster",
        help="a 3-node NATS JetStream cluster (streams and buckets with 3 replicas), two "
        "processes of every service and worker, on the PostgreSQL database DATABASE_URL names; "
        "state under ./var-cluster",
    )
    for command in (run_parser, cluster_parser):
        command.add_argument(
            "--var-dir",
            type=lambda p: __import__("pathlib").Path(p),
            default=None,
            help="state directory (default ./var or ATELIER_VAR_DIR; the cluster's: ./var-cluster)",
        )
        command.add_argument(
            "--fresh", action="store_true", help="delete the state directory first"
        )
        command.add_argument(
            "--worker",
            action="append",
            default=None,
            metavar="PROVIDER",
            help="provider worker to start (repeatable; default: offline)",
        )
    args = parser.parse_args(argv)
    if args.worker is None:
        args.worker = ["offline"]
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
