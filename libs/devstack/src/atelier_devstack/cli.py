"""`atelier-dev run`: the whole system locally, in one command."""

from __future__ import annotations

import argparse
import os
import shutil
import time

from atelier_devstack.stack import Stack, StackConfig, WorkerSpec, default_var_dir


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


def run(args: argparse.Namespace) -> int:
    var_dir = default_var_dir() if args.var_dir is None else args.var_dir
    if args.fresh and var_dir.exists():
        shutil.rmtree(var_dir)
    workers = [WorkerSpec(p) for p in args.worker]
    stack = Stack(
        StackConfig(
            var_dir=var_dir,
            workers=workers,
            database_url=os.environ.get("DATABASE_URL"),
            json_logs=True,
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

  Inkweld app, Atelier alone: point the app's API URL at {info.gateway_url}
    (its /api/v1 routes are served here; tokens in run.json above)
  Inkweld app beside its own backend (production): see docs/inkweld-deployment.md
    (deploy/inkweld/Caddyfile sends only the image routes here)

Generate an image (user token for project "demo-project"):{example}
Ctrl-C stops everything.""",
        flush=True,
    )
    try:
        while True:
            time.sleep(1)
            for name in stack.supervisor.names():
                if not stack.supervisor.is_running(name):
                    log_path = stack.supervisor.process(name).log_path
                    print(f"{name} stopped unexpectedly; see {log_path}")
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
    run_parser.add_argument(
        "--var-dir",
        type=lambda p: __import__("pathlib").Path(p),
        default=None,
        help="state directory (default ./var or ATELIER_VAR_DIR)",
    )
    run_parser.add_argument("--fresh", action="store_true", help="delete the state directory first")
    run_parser.add_argument(
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
