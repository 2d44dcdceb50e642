"""Peer: Atelier beside LiteLLM's proxy, both in front of the same fake OpenAI server, at the same
concurrency and image size, interleaved in one run (direct → LiteLLM → Atelier → Atelier's
OpenAI route, rotating, in rounds), so drift of the machine hits all of them alike.

    uv run python -m bench.peer            # c=1 and c=8, 6 rounds each
    uv run python -m bench.peer --quick    # 2 rounds

Atelier's side is the synchronous route `POST /api/v1/ai/image/generate` when the gateway
serves it, otherwise a submit (`POST /v1/generations`) followed by its SSE stream until the job
has landed (images stored in object storage with thumbnails, metadata in the database).
`atelier_openai` is Atelier's OpenAI-compatible `POST /v1/images/generations`, sent the very
body LiteLLM's same route gets (the profile is named after the model): the like-for-like
comparison. LiteLLM only relays the provider's answer; that difference is part of what is
measured.

LiteLLM runs from its own venv, never the project's:

    uv venv bench/.venv-litellm
    uv pip install --python bench/.venv-litellm/bin/python "litellm[proxy]"

Offline it needs LITELLM_LOCAL_MODEL_COST_MAP=True and LITELLM_TELEMETRY_DISABLED=true (set
here), a master key, and a model in its bundled cost map (`openai/gpt-image-1`).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from atelier_devstack.ports import free_port
from atelier_devstack.processes import Supervisor, wait_http_ok, wait_tcp
from atelier_devstack.stack import WorkerSpec
from bench.common import (
    FINAL,
    PROJECT,
    ROOT,
    BenchStack,
    ProcessWatch,
    bench_stack,
    cpu_seconds,
    ensure_project_venv,
    env_of,
    ms,
    parser,
    percentiles,
    write_result,
)

LITELLM = ROOT / "bench" / ".venv-litellm" / "bin" / "litellm"
FAKE_KEY = "sk-fake-openai-bench-0000"
MASTER_KEY = "sk-bench-master-key"
MODEL = "gpt-image-1"
SIZE = "1024x1024"
SYNC_ROUTE = "/api/v1/ai/image/generate"
OPENAI_ROUTE = "/v1/images/generations"
stream_breaks: list[str] = []  # Atelier jobs whose SSE stream ended before the final state

Request = Callable[[httpx.AsyncClient, int], Awaitable[None]]


def ensure_litellm() -> None:
    """Create bench/.venv-litellm with `litellm[proxy]` (and py-spy for profiling) if missing."""
    if LITELLM.exists():
        return
    uv = shutil.which("uv")
    base = [uv] if uv else [sys.executable, "-m", "uv"]
    venv = LITELLM.parent.parent
    print(f"installing litellm[proxy] into {venv} (once)", flush=True)
    subprocess.run([*base, "venv", "--quiet", "--python", "3.11", str(venv)], check=True)
    subprocess.run(
        [
            *base,
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            "litellm[proxy]",
            "py-spy",
        ],
        check=True,
    )


def start_fake_and_litellm(sup: Supervisor, work: Path) -> tuple[str, str]:
    fake_port, proxy_port = free_port(), free_port()
    # Memoized drawing (same prompt every request): the fake's CPU must not drown the proxies'.
    sup.start(
        "fake-openai",
        [
            sys.executable,
            "-m",
            "bench.fake_openai_cached",
            "--port",
            str(fake_port),
            "--api-key",
            FAKE_KEY,
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
    )
    wait_tcp("127.0.0.1", fake_port, timeout=30, process=sup.process("fake-openai"))
    fake_url = f"http://127.0.0.1:{fake_port}"
    config = work / "litellm.yaml"
    # JSON is YAML: no YAML writer needed.
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {
                            "model": f"openai/{MODEL}",
                            "api_base": f"{fake_url}/v1",
                            "api_key": FAKE_KEY,
                        },
                    }
                ],
                "general_settings": {"master_key": MASTER_KEY},
                "litellm_settings": {"telemetry": False},
            }
        )
    )
    sup.start(
        "litellm",
        [
            str(LITELLM),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(proxy_port),
            "--num_workers",
            "1",
        ],
        env={
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY_DISABLED": "true",
            "LITELLM_LOG": "ERROR",
            "PATH": f"{LITELLM.parent}:{os.environ.get('PATH', '')}",
        },
        cwd=work,
    )
    proxy_url = f"http://127.0.0.1:{proxy_port}"
    wait_http_ok(f"{proxy_url}/health/liveliness", timeout=180, process=sup.process("litellm"))
    return fake_url, proxy_url


PROMPT = "peer bench image"  # one prompt: the fake draws it once (bench/fake_openai_cached.py)


def body(i: int) -> dict[str, Any]:
    return {"model": MODEL, "prompt": PROMPT, "n": 1, "size": SIZE}


def direct_request(fake_url: str) -> Request:
    async def call(client: httpx.AsyncClient, i: int) -> None:
        response = await client.post(
            f"{fake_url}/v1/images/generations",
            json=body(i),
            headers={"Authorization": f"Bearer {FAKE_KEY}"},
        )
        response.raise_for_status()
        assert response.json()["data"][0]["b64_json"]

    return call


def litellm_request(proxy_url: str) -> Request:
    async def call(client: httpx.AsyncClient, i: int) -> None:
        response = await client.post(
            f"{proxy_url}/v1/images/generations",
            json=body(i),
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        )
        response.raise_for_status()
        assert response.json()["data"][0]["b64_json"]

    return call


def atelier_request(bench: BenchStack, profile_id: str, sync: bool) -> Request:
    headers = {"Authorization": f"Bearer {bench.info.user_token}"}
    gateway = bench.info.gateway_url

    def job(i: int) -> dict[str, Any]:
        return {
            "project": PROJECT,
            "profile_id": profile_id,
            "prompt": PROMPT,
            "size": SIZE,
            "count": 1,
        }

    def inkweld_job(i: int) -> dict[str, Any]:
        # The app's own body (docs/inkweld.md): the images come back in the answer, base64.
        return {
            "projectKey": PROJECT,
            "profileId": profile_id,
            "prompt": PROMPT,
            "n": 1,
            "size": SIZE,
        }

    async def call_sync(client: httpx.AsyncClient, i: int) -> None:
        response = await client.post(f"{gateway}{SYNC_ROUTE}", json=inkweld_job(i), headers=headers)
        response.raise_for_status()
        assert response.json()["data"][0]["b64Json"]

    async def call_submit_and_follow(client: httpx.AsyncClient, i: int) -> None:
        accepted = await client.post(f"{gateway}/v1/generations", json=job(i), headers=headers)
        accepted.raise_for_status()
        job_id = accepted.json()["id"]
        url = f"{gateway}/v1/generations/{job_id}/events"
        async with client.stream("GET", url, headers=headers) as events:
            async for line in events.aiter_lines():
                if line.startswith("data:"):
                    status = json.loads(line[5:])["status"]
                    if status in FINAL:
                        if status != "completed":
                            raise RuntimeError(f"job {job_id} ended {status}")
                        return
        # The stream ended early (the gateway lost its status feed): as a client would, read
        # the job until it is final. Counted, so the result says how often it happened.
        stream_breaks.append(job_id)
        for _ in range(1200):
            polled = await client.get(f"{gateway}/v1/generations/{job_id}", headers=headers)
            if polled.status_code == 200 and polled.json()["status"] in FINAL:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"job {job_id} did not end within 60 s")

    return call_sync if sync else call_submit_and_follow


def atelier_openai_request(bench: BenchStack) -> Request:
    """The same body as LiteLLM's: `model` names the profile."""
    headers = {"Authorization": f"Bearer {bench.info.user_token}", "OpenAI-Project": PROJECT}
    url = f"{bench.info.gateway_url}{OPENAI_ROUTE}"

    async def call(client: httpx.AsyncClient, i: int) -> None:
        response = await client.post(url, json=body(i), headers=headers)
        response.raise_for_status()
        assert response.json()["data"][0]["b64_json"]

    return call


async def batch(
    call: Request, start: int, count: int, concurrency: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    next_i = start
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def lane() -> None:
            nonlocal next_i
            while next_i < start + count:
                i = next_i
                next_i += 1
                t0 = time.perf_counter()
                await call(client, i)
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


def group_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


async def compare(
    targets: dict[str, Request],
    cpu_pids: dict[str, list[int]],
    concurrency: int,
    rounds: int,
    per_batch: int,
) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {name: [] for name in targets}
    walls = dict.fromkeys(targets, 0.0)
    cpu = dict.fromkeys(targets, 0.0)
    counter = 0
    names = list(targets)
    # One warm-up batch each (connections, caches, first-request costs).
    for name in names:
        await batch(targets[name], counter, max(4, concurrency), concurrency)
        counter += max(4, concurrency)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            before = group_cpu(cpu_pids[name])
            got, wall = await batch(targets[name], counter, per_batch, concurrency)
            cpu[name] += group_cpu(cpu_pids[name]) - before
            counter += per_batch
            latencies[name] += got
            walls[name] += wall
    out: dict[str, Any] = {"concurrency": concurrency, "requests_each": rounds * per_batch}
    direct = percentiles(latencies["direct"])
    for name in names:
        stats = percentiles(latencies[name])
        out[name] = {
            "latency_ms": ms(stats),
            "overhead_p50_ms": round((stats["p50"] - direct["p50"]) * 1e3, 2),
            "overhead_p99_ms": round((stats["p99"] - direct["p99"]) * 1e3, 2),
            "requests_per_s": round(len(latencies[name]) / walls[name], 1),
            "cpu_ms_per_request": round(cpu[name] * 1e3 / len(latencies[name]), 2),
        }
    for name, key in (("atelier", "atelier_vs_litellm"), ("atelier_openai", "openai_vs_litellm")):
        if name in out:
            out[key] = ratios(out[name], out["litellm"])
    return out


def ratios(a: dict[str, Any], lite: dict[str, Any]) -> dict[str, float]:
    return {
        "overhead_p50_ratio": round(a["overhead_p50_ms"] / max(lite["overhead_p50_ms"], 1e-3), 1),
        "overhead_p99_ratio": round(a["overhead_p99_ms"] / max(lite["overhead_p99_ms"], 1e-3), 1),
        "throughput_ratio": round(a["requests_per_s"] / lite["requests_per_s"], 2),
        "cpu_per_request_ratio": round(
            a["cpu_ms_per_request"] / max(lite["cpu_ms_per_request"], 1e-3), 1
        ),
    }


async def measure(
    concurrencies: list[int], rounds: int, per_batch: dict[int, int], env: dict[str, str]
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="atelier-bench-peer-"))
    sup = Supervisor(log_dir=work / "logs")
    try:
        fake_url, proxy_url = start_fake_and_litellm(sup, work)
        worker = WorkerSpec(
            "openai",
            env={
                "ATELIER_WORKERS_API_KEY": FAKE_KEY,
                "ATELIER_WORKERS_CONCURRENCY": "64",
                "ATELIER_WORKERS_ALLOWED_BASE_URL_ORIGINS": json.dumps([fake_url]),
            },
        )
        # The operator's approval for the key to go to the fake, a loopback origin (ADR 14).
        approved = {"ATELIER_PROFILES_ALLOWED_BASE_URL_ORIGINS": json.dumps({"openai": [fake_url]})}
        with bench_stack("peer", extra_env={**approved, **env}, workers=[worker]) as bench:
            profile_id = bench.create_profile(
                {
                    # Named after the model: the OpenAI route's `model` is the same as LiteLLM's.
                    "name": MODEL,
                    "provider": "openai",
                    "model": MODEL,
                    "base_url": f"{fake_url}/v1",
                    "enabled": True,
                    "sizes": [SIZE],
                    "default_size": SIZE,
                    "counts": [1],
                    "options": [],
                    "max_reference_images": 0,
                    "prompt_max_length": 4000,
                    "timeout_s": 120,
                    "sort_order": 1,
                    "credit_cost": 0,
                }
            )
            async with httpx.AsyncClient() as client:
                # The Inkweld routes have their own document, under /api/v1.
                spec = (await client.get(f"{bench.info.gateway_url}/api/v1/openapi.json")).json()
            paths = spec.get("paths", {})
            sync = SYNC_ROUTE in paths or SYNC_ROUTE.removeprefix("/api/v1") in paths
            procs = ProcessWatch(bench.stack)
            atelier_pids = [
                pid for name, pids in procs.groups.items() if name != "bench-client" for pid in pids
            ]
            targets = {
                "direct": direct_request(fake_url),
                "litellm": litellm_request(proxy_url),
                "atelier": atelier_request(bench, profile_id, sync),
                "atelier_openai": atelier_openai_request(bench),
            }
            cpu_pids = {
                "direct": [],
                "litellm": [sup.process("litellm").pid],
                "atelier": atelier_pids,
                "atelier_openai": atelier_pids,
            }
            results = []
            for c in concurrencies:
                results.append(await compare(targets, cpu_pids, c, rounds, per_batch[c]))
                last = results[-1]
                print(json.dumps({k: last[k] for k in ("atelier_vs_litellm", "openai_vs_litellm")}))
    finally:
        sup.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "env": env,
        "image_size": SIZE,
        "model": MODEL,
        "litellm_version": _litellm_version(),
        "litellm_workers": 1,
        "atelier_route": SYNC_ROUTE if sync else "POST /v1/generations + SSE until landed",
        "atelier_openai_route": f"POST {OPENAI_ROUTE}",
        "sse_streams_ended_early": len(stream_breaks),
        "by_concurrency": results,
    }


def _litellm_version() -> str:
    python = LITELLM.parent / "python"
    try:
        return subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
    except OSError:
        return "unknown"


def main() -> None:
    ensure_project_venv()
    cli = parser(__doc__.split("\n\n")[0])
    cli.add_argument("--concurrency", type=int, nargs="+", default=[1, 8], help="levels (1 8)")
    cli.add_argument("--rounds", type=int, default=None, help="interleaved rounds (6; quick 2)")
    args = cli.parse_args()
    ensure_litellm()
    rounds = args.rounds or (2 if args.quick else 6)
    per_batch = {c: (10 if args.quick else 25) * max(1, min(c, 4)) for c in args.concurrency}
    result = asyncio.run(measure(args.concurrency, rounds, per_batch, env_of(args.env)))
    write_result("peer", result, args.out, args.quick)


if __name__ == "__main__":
    main()
