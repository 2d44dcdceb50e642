"""`python -m atelier_fakes openai --port N --api-key K`: run a fake provider in the foreground."""

from __future__ import annotations

import argparse
import sys

from atelier_fakes import (
    bfl,
    comfyui,
    falai,
    gemini,
    openai,
    openrouter,
    replicate,
    stability,
    stable_diffusion,
    workersai,
)
from atelier_fakes.server import bind_free_socket, make_server


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m atelier_fakes",
        description="Local fake servers that speak image providers' wire formats.",
    )
    fakes = parser.add_subparsers(dest="fake", required=True, metavar="FAKE")
    # Each fake registers its own subcommand, which sets `make_app` and `url_suffix`.
    for module in (
        openai,
        openrouter,
        gemini,
        stability,
        bfl,
        workersai,
        falai,
        replicate,
        comfyui,
        stable_diffusion,
    ):
        module.add_cli(fakes)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    app, suffix = args.make_app(args), args.url_suffix
    sock = bind_free_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    # Printed before serving so a supervisor or script can read the port when --port is 0.
    print(f"fake {args.fake} listening on http://{host}:{port}{suffix}", flush=True)
    make_server(app, log_level=args.log_level).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
