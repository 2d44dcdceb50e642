"""Every provider through the whole stack: gateway → context → dispatch → worker → its fake → media.

One stack for this module, with one worker per provider (its key from the environment, as a
deployment would have it) and each provider's fake server on loopback. A profile per provider
points its `base_url` at the fake. Then one image each, and for an async provider a worker killed
while it polls: the restarted worker resumes the saved handle and the provider sees one
submission.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from atelier_contracts.comfyui import PROMPT_NOT_USED_NOTE
from atelier_devstack.stack import RunInfo, Stack, StackConfig, WorkerSpec
from atelier_fakes import run_fake_in_thread
from atelier_fakes.bfl import FakeBFLState, create_bfl_fake
from atelier_fakes.comfyui import FakeComfyUIState, create_comfyui_fake
from atelier_fakes.falai import FakeFalState, create_falai_fake
from atelier_fakes.gemini import FakeGeminiState, create_gemini_fake
from atelier_fakes.openrouter import FakeOpenRouterState, create_openrouter_fake
from atelier_fakes.replicate import FakeReplicateState, create_replicate_fake
from atelier_fakes.stability import FakeStabilityState, create_stability_fake
from atelier_fakes.stable_diffusion import FakeA1111State, create_stable_diffusion_fake
from atelier_fakes.workersai import FakeWorkersAIState, create_workersai_fake

pytestmark = pytest.mark.e2e

FINAL = {"completed", "partial", "failed", "cancelled"}
# Providers these profiles send no seed to (Gemini takes none; OpenRouter's chat path neither):
# their images must not show the seed dispatch gave the task.
SEEDLESS = {"gemini", "openrouter"}
PROJECT = "demo-project"
SIZE = "512x512"
CHECKPOINT = "sd_xl_base_1.0.safetensors"
# The smallest ComfyUI text-to-image graph ("Save (API)" format) and where the job's values go.
COMFY_WORKFLOW: dict[str, Any] = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1, "height": 1, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 0,
            "steps": 10,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "e2e"}},
}
COMFY_NODE_MAP = {
    "prompt": "6.text",
    "negative_prompt": "7.text",
    "width": "5.width",
    "height": "5.height",
    "seed": "3.seed",
    "batch_size": "5.batch_size",
}


@dataclass
class Provider:
    """One provider's fake, its worker's key and the profile that points at the fake."""

    name: str
    model: str
    state: Any
    create: Callable[[Any], FastAPI]
    url_suffix: str = ""
    api_key: str | None = None
    provider_config: dict[str, Any] = field(default_factory=dict)
    url: str = ""
    profile_id: str = ""

    @property
    def submissions(self) -> list[Any]:
        recorded = getattr(self.state, "submissions", None)
        if recorded is None:  # fakes whose every POST is a generation
            recorded = [r for r in self.state.requests if r.method == "POST"]
        return list(recorded)


def _providers() -> dict[str, Provider]:
    workersai = FakeWorkersAIState(api_key="cf-e2e-token-0123456789abcdef")
    providers = [
        Provider(
            "openrouter",
            "google/gemini-2.5-flash-image",
            FakeOpenRouterState(api_key="sk-or-v1-e2e-0123456789"),
            create_openrouter_fake,
            "/api/v1",
        ),
        Provider(
            "gemini",
            "gemini-2.5-flash-image",
            FakeGeminiState(api_key="AIzaE2eGeminiKey-0123456789"),
            create_gemini_fake,
            "/v1beta",
        ),
        Provider(
            "stability",
            "core",
            FakeStabilityState(api_key="sk-e2e-stability-0123456789"),
            create_stability_fake,
            "/v2beta",
        ),
        Provider(
            "bfl",
            "flux-pro-1.1",
            FakeBFLState(api_key="bfl-e2e-key-0123456789"),
            create_bfl_fake,
            "/v1",
            provider_config={"poll_interval_s": 0.2},
        ),
        Provider(
            "workersai",
            "@cf/stabilityai/stable-diffusion-xl-base-1.0",
            workersai,
            create_workersai_fake,
            "/client/v4",
            provider_config={"account_id": workersai.account_id},
        ),
        Provider(
            "falai",
            "fal-ai/flux/dev",
            FakeFalState(api_key="fal-e2e-key:0123456789"),
            create_falai_fake,
            provider_config={"poll_interval_s": 0.2},
        ),
        Provider(
            "replicate",
            "black-forest-labs/flux-schnell",
            FakeReplicateState(api_token="r8_e2e_token_0123456789"),
            create_replicate_fake,
            "/v1",
            provider_config={"poll_interval_s": 0.2, "prefer_wait_s": 1},
        ),
        Provider(
            "comfyui",
            "default",
            FakeComfyUIState(),
            create_comfyui_fake,
            provider_config={
                "workflow": COMFY_WORKFLOW,
                "node_map": COMFY_NODE_MAP,
                "poll_interval_s": 0.2,
            },
        ),
        Provider("stable-diffusion", "default", FakeA1111State(), create_stable_diffusion_fake),
    ]
    for provider in providers:
        state = provider.state
        provider.api_key = getattr(state, "api_key", None) or getattr(state, "api_token", None)
    return {provider.name: provider for provider in providers}


@dataclass
class ProviderStack:
    stack: Stack
    info: RunInfo
    providers: dict[str, Provider]

    def user(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.info.gateway_url,
            headers={"Authorization": f"Bearer {self.info.user_token}"},
            timeout=30,
        )

    def generate(self, provider: Provider, prompt: str) -> str:
        with self.user() as user:
            submitted = user.post(
                "/v1/generations",
                json={
                    "project": PROJECT,
                    "profile_id": provider.profile_id,
                    "prompt": prompt,
                    "size": SIZE,
                    "count": 1,
                },
            )
        assert submitted.status_code == 202, submitted.text
        return str(submitted.json()["id"])

    def wait_final(self, job_id: str, timeout_s: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        with self.user() as user:
            while time.monotonic() < deadline:
                job: dict[str, Any] = user.get(f"/v1/generations/{job_id}").json()
                if job["status"] in FINAL:
                    return job
                time.sleep(0.25)
        raise AssertionError(f"job {job_id} did not finish in {timeout_s} s")


@pytest.fixture(scope="module")
def provider_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderStack]:
    providers = _providers()
    stops: list[Callable[[], None]] = []
    stack: Stack | None = None
    try:
        for provider in providers.values():
            url, stop = run_fake_in_thread(provider.create(provider.state))
            stops.append(stop)
            provider.url = url + provider.url_suffix
        var_dir: Path = tmp_path_factory.mktemp("providers")
        stack = Stack(
            StackConfig(
                var_dir=var_dir,
                prefer_standard_ports=False,
                workers=[
                    WorkerSpec(
                        provider.name,
                        {"ATELIER_WORKERS_API_KEY": provider.api_key} if provider.api_key else {},
                    )
                    for provider in providers.values()
                ],
                database_url=os.environ.get("ATELIER_E2E_DATABASE_URL"),
                seed_demo_profile=False,
                extra_env={
                    "ATELIER_DISPATCH_RETRY_BASE_S": "0.2",
                    "ATELIER_DISPATCH_SWEEP_INTERVAL_S": "0.5",
                    # A killed worker's task comes back within seconds, not the default 30.
                    "ATELIER_WORKERS_ACK_WAIT_S": "4",
                    "ATELIER_WORKERS_HEARTBEAT_S": "1",
                    # Each provider's key may go to its fake (loopback: refused unless an
                    # operator allows that exact origin, docs/adr/0014).
                    "ATELIER_PROFILES_ALLOWED_BASE_URL_ORIGINS": json.dumps(
                        {p.name: [p.url.removesuffix(p.url_suffix)] for p in providers.values()}
                    ),
                },
            )
        )
        info = stack.start()
        _lift_rate_limit(info)
        for provider in providers.values():
            provider.profile_id = _create_profile(info, provider)
        yield ProviderStack(stack, info, providers)
    finally:
        if stack is not None:
            stack.stop()
        for stop in stops:
            stop()


def _admin(info: RunInfo) -> httpx.Client:
    return httpx.Client(
        base_url=info.admin_url,
        headers={"Authorization": f"Bearer {info.admin_token}"},
        timeout=30,
    )


def _lift_rate_limit(info: RunInfo) -> None:
    # One writer submits every job here: lift the per-user submission rate limit for the run.
    with _admin(info) as admin:
        lifted = admin.put(
            "/admin/v1/quotas", json={"credits_per_period": None, "rate_limit_count": None}
        )
    assert lifted.status_code == 200, lifted.text


def _create_profile(info: RunInfo, provider: Provider) -> str:
    with _admin(info) as admin:
        created = admin.post(
            "/admin/v1/profiles",
            json={
                "name": f"E2E {provider.name}",
                "provider": provider.name,
                "model": provider.model,
                "sizes": [SIZE],
                "default_size": SIZE,
                "counts": [1],
                "timeout_s": 60,
                "base_url": provider.url,
                "provider_config": provider.provider_config,
            },
        )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _assert_one_image_lands(stack: ProviderStack, job: dict[str, Any]) -> None:
    assert job["status"] == "completed", job.get("error")
    [image] = job["images"]
    with stack.user() as user:
        original = user.get(f"/v1/media/{image['media_id']}/content")
    assert original.status_code == 200
    with Image.open(io.BytesIO(original.content)) as picture:
        assert picture.size == (image["width"], image["height"])


@pytest.mark.parametrize(
    "name",
    [
        "openrouter",
        "gemini",
        "stability",
        "bfl",
        "workersai",
        "falai",
        "replicate",
        "comfyui",
        "stable-diffusion",
    ],
)
def test_one_image_through_the_whole_stack(provider_stack: ProviderStack, name: str) -> None:
    provider = provider_stack.providers[name]
    before = len(provider.submissions)
    job_id = provider_stack.generate(provider, f"A lighthouse at dusk, by {name}")
    job = provider_stack.wait_final(job_id)
    _assert_one_image_lands(provider_stack, job)
    assert len(provider.submissions) == before + 1
    [image] = job["images"]
    with provider_stack.user() as user:
        media = user.get(f"/v1/media/{image['media_id']}").json()
    if name in SEEDLESS:
        assert media["seed"] is None
    else:  # sent to the provider (or reported back by it), so recorded
        assert isinstance(media["seed"], int)
    if provider.api_key:  # the worker's own key, from its environment, reached the provider
        sent = json.dumps(provider.submissions[-1].headers)
        assert provider.api_key in sent


# Issue 21, item 5: every provider whose API reports a block, at each stage it reports, with the
# category where its answer names one (docs/providers.md, "Moderation detail").
MODERATION_CASES = [
    ("openrouter", "403", "input", "violence"),
    ("openrouter", "content-filter", "output", "image_safety"),
    ("gemini", "block-prompt", "input", "prohibited_content"),
    ("gemini", "image-safety", "output", "image_safety"),
    ("stability", "403-moderation", "input", None),
    ("stability", "content-filtered", "output", None),
    ("bfl", "request-moderated", "input", None),
    ("bfl", "content-moderated", "output", None),
    ("workersai", "nsfw-input", "input", None),
    ("workersai", "nsfw-output", "output", None),
    ("falai", "content-policy", "input", None),
    ("falai", "nsfw", "output", None),
    ("replicate", "sensitive", "input", None),
    ("replicate", "nsfw", "output", None),
]


def test_a_block_says_at_which_stage_which_category_and_which_input(
    provider_stack: ProviderStack,
) -> None:
    jobs = {
        case: provider_stack.generate(
            provider_stack.providers[case[0]], f"A duel at dawn [{case[0]}:{case[1]}]"
        )
        for case in MODERATION_CASES
    }
    seen = {}
    for (name, marker, _, _), job_id in jobs.items():
        job = provider_stack.wait_final(job_id)
        assert job["status"] == "failed", (name, marker, job)
        error = job["error"]
        seen[(name, marker)] = (error["class"], error["stage"], error["category"], error["input"])
    # No reference images were sent, so an input-stage block can only be about the prompt.
    assert seen == {
        (name, marker): (
            "content_blocked",
            stage,
            category,
            {"kind": "prompt", "element_id": None} if stage == "input" else None,
        )
        for name, marker, stage, category in MODERATION_CASES
    }


def test_a_comfyui_workflow_is_checked_when_saved_and_one_without_text_notes_it(
    provider_stack: ProviderStack,
) -> None:
    comfy = provider_stack.providers["comfyui"]
    no_text = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "e"}},
    }
    body = {
        "name": "E2E comfyui without text",
        "provider": "comfyui",
        "model": "default",
        "sizes": [SIZE],
        "default_size": SIZE,
        "counts": [1],
        "timeout_s": 60,
        "base_url": comfy.url,
        "provider_config": {"workflow": no_text, "node_map": COMFY_NODE_MAP},
    }
    with _admin(provider_stack.info) as admin:
        refused = admin.post("/admin/v1/profiles", json=body)
        assert refused.status_code == 422, refused.text
        assert (
            "provider_config.node_map.prompt: the workflow has no node '6'"
            in (refused.json()["error"]["message"])
        )
        body["provider_config"] = {
            "workflow": no_text,
            "node_map": {"prompt": None, "width": "1.width", "height": "1.height"},
        }
        created = admin.post("/admin/v1/profiles", json=body)
    assert created.status_code == 201, created.text
    no_text_profile = replace(comfy, profile_id=str(created.json()["id"]))

    job_id = provider_stack.generate(no_text_profile, "A lighthouse nobody will draw")
    job = provider_stack.wait_final(job_id)
    _assert_one_image_lands(provider_stack, job)
    assert PROMPT_NOT_USED_NOTE in job["assembly_notes"]
    assert "lighthouse" not in json.dumps(comfy.submissions[-1].body["prompt"])


def test_queue_progress_reaches_the_writers_event_stream(provider_stack: ProviderStack) -> None:
    fal = provider_stack.providers["falai"]
    fal.state.queue_s, fal.state.run_s = 2.0, 1.0
    try:
        job_id = provider_stack.generate(fal, "A slow harbour")
        with provider_stack.user() as user:
            events = _read_sse(user, f"/v1/generations/{job_id}/events")
    finally:
        fal.state.queue_s, fal.state.run_s = 0.2, 0.2
    details = [e["progress"].get("detail") for e in events if e["progress"].get("detail")]
    assert any(detail.startswith("queued") for detail in details), events
    assert events[-1]["status"] == "completed"


def test_a_provider_answering_503_falls_back_to_another_provider(
    provider_stack: ProviderStack,
) -> None:
    """Issue 16, item 1: profile A on Gemini's fake, which answers 503 (model overloaded) to every
    attempt, falls back to profile B on Stability's fake; the job completes with B's image and
    says why."""
    gemini, stability = provider_stack.providers["gemini"], provider_stack.providers["stability"]
    info = provider_stack.info
    with _admin(info) as admin:
        created = admin.post(
            "/admin/v1/profiles",
            json={
                "name": "E2E Gemini, then Stability",
                "provider": "gemini",
                "model": gemini.model,
                "sizes": [SIZE],
                "default_size": SIZE,
                "counts": [1],
                "timeout_s": 60,
                "base_url": gemini.url,
                "fallback_profile_id": stability.profile_id,
            },
        )
    assert created.status_code == 201, created.text
    gemini_calls, stability_calls = len(gemini.submissions), len(stability.submissions)
    with provider_stack.user() as user:
        submitted = user.post(
            "/v1/generations",
            json={
                "project": PROJECT,
                "profile_id": created.json()["id"],
                "prompt": "A lighthouse in a storm [gemini:503]",
                "count": 1,
            },
        )
    assert submitted.status_code == 202, submitted.text
    job = provider_stack.wait_final(submitted.json()["id"])

    _assert_one_image_lands(provider_stack, job)
    [image] = job["images"]
    assert image["profile_id"] == stability.profile_id
    assert image["profile_name"] == "E2E stability"
    assert "provider_unavailable" in image["fallback_reason"]
    assert (
        "'E2E Gemini, then Stability' (gemini) failed after 3 attempts"
        in (image["fallback_reason"])
    )
    assert len(gemini.submissions) == gemini_calls + 3  # its retries, then the fallback
    assert len(stability.submissions) == stability_calls + 1


def test_comfyui_progress_is_shown_by_the_job_read_by_id(provider_stack: ProviderStack) -> None:
    """ComfyUI's `progress` messages are stored on the job: a client that only polls
    `GET /v1/generations/{id}` sees how far it is (issue 16, item 4)."""
    comfy = provider_stack.providers["comfyui"]
    # Every sampler step 0.4 s: 10 steps are 4 s, two of dispatch's store intervals.
    comfy.state.step_s = 0.4
    fractions: list[float] = []
    try:
        job_id = provider_stack.generate(comfy, "A slow lighthouse")
        with provider_stack.user() as user:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                job = user.get(f"/v1/generations/{job_id}").json()
                if job["status"] in ("completed", "partial", "failed", "cancelled"):
                    break
                if job["progress"]["fraction"] is not None:
                    fractions.append(job["progress"]["fraction"])
                time.sleep(0.2)
    finally:
        comfy.state.step_s = 0.02
    assert job["status"] == "completed", job
    # Past the start is what matters: a busy machine may store only the first tick and the
    # last (1.0, shown while the image lands), never one in between.
    assert fractions and max(fractions) > 0, fractions
    assert all(0 <= f <= 1 for f in fractions), fractions
    assert job["progress"]["fraction"] is None  # a final job shows no figure


def test_a_worker_killed_while_polling_resumes_without_paying_twice(
    provider_stack: ProviderStack,
) -> None:
    fal = provider_stack.providers["falai"]
    fal.state.queue_s, fal.state.run_s = 3.0, 3.0
    try:
        before, polls_before = len(fal.submissions), _status_polls(fal)
        job_id = provider_stack.generate(fal, "A lighthouse that must be paid for once")
        # Polling means submitted, and the handle saved (it is saved before the first poll).
        _wait_for(lambda: _status_polls(fal) > polls_before, "the worker to poll its request")
        request_id = max(fal.state.jobs.values(), key=lambda j: j.created_at).request_id
        provider_stack.stack.kill("worker-falai")  # SIGKILL: no clean shutdown
        seen_when_killed = len(fal.state.requests)
        provider_stack.stack.restart("worker-falai")
        job = provider_stack.wait_final(job_id)
    finally:
        fal.state.queue_s, fal.state.run_s = 0.2, 0.2
    _assert_one_image_lands(provider_stack, job)
    assert len(fal.submissions) == before + 1  # no second submission...
    after_restart = fal.state.requests[seen_when_killed:]
    assert any(request_id in r.path for r in after_restart)  # ...the saved one was followed


def _status_polls(provider: Provider) -> int:
    return sum(1 for r in provider.state.requests if r.path.endswith("/status"))


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s} s for {what}")
        time.sleep(0.05)


def _read_sse(client: httpx.Client, path: str, timeout_s: float = 60) -> list[dict[str, Any]]:
    """Status events until the job's final one (the server closes the stream then)."""
    events: list[dict[str, Any]] = []
    data: list[str] = []
    with client.stream("GET", path, timeout=timeout_s) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                events.append(json.loads("\n".join(data)))
                data = []
                if events[-1]["status"] in FINAL:
                    break
    return events
