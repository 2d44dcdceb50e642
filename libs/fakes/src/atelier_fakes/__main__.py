"""`python -m atelier_fakes openai --port N --api-key K`: run a fake provider in the foreground."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atelier_fakes import (
    bfl,
    comfyui,
    falai,
    gemini,
    openrouter,
    replicate,
    stability,
    stable_diffusion,
    workersai,
)
from atelier_fakes.openai import DEFAULT_SPEC_PATH, MARKERS, FakeOpenAIState, create_openai_fake
from atelier_fakes.server import bind_free_socket, make_server


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m atelier_fakes",
        description="Local fake servers that speak image providers' wire formats.",
    )
    fakes = parser.add_subparsers(dest="fake", required=True, metavar="FAKE")
    openai = fakes.add_parser(
        "openai",
        help="fake OpenAI Images API (POST /v1/images/generations)",
        description="Fake OpenAI Images API on /v1, validating bodies against OpenAI's "
        "OpenAPI document.",
        epilog="failure markers (put them in the prompt):\n"
        + "\n".join(f"  [openai:{name}]  {what}" for name, what in MARKERS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    openai.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    openai.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    openai.add_argument("--api-key", default=FakeOpenAIState.api_key, help="bearer key to accept")
    openai.add_argument(
        "--spec",
        type=Path,
        default=DEFAULT_SPEC_PATH,
        help=f"OpenAI OpenAPI document to validate bodies against (default {DEFAULT_SPEC_PATH})",
    )
    openai.add_argument(
        "--url-ttl", type=float, default=FakeOpenAIState.url_ttl_s, help="seconds a url lives"
    )
    openai.add_argument(
        "--hang", type=float, default=FakeOpenAIState.hang_s, help="seconds [openai:hang] stalls"
    )
    openai.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    # Fakes that register their own subcommand; each sets `make_app` and `url_suffix`.
    for module in (
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
    if hasattr(args, "make_app"):
        app, suffix = args.make_app(args), args.url_suffix
    else:
        state = FakeOpenAIState(
            api_key=args.api_key, spec_path=args.spec, url_ttl_s=args.url_ttl, hang_s=args.hang
        )
        app, suffix = create_openai_fake(state), "/v1"
    sock = bind_free_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    # Printed before serving so a supervisor or script can read the port when --port is 0.
    print(f"fake {args.fake} listening on http://{host}:{port}{suffix}", flush=True)
    make_server(app, log_level=args.log_level).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
