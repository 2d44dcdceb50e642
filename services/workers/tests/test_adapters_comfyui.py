"""The ComfyUI adapter against the fake ComfyUI server (HTTP and websocket, on a local port)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from adapter_support import (
    COMFYUI_CHECKPOINT,
    COMFYUI_NODE_MAP,
    COMFYUI_TEXT_TO_IMAGE,
    ProgressLog,
    failure,
    picture,
    serve,
    wait_until,
)

from atelier_contracts.comfyui import PROMPT_NOT_USED_NOTE, parse_node_map
from atelier_contracts.errors import ErrorClass
from atelier_fakes.comfyui import FakeComfyUIState, create_comfyui_fake
from atelier_workers.adapters import ProviderError
from atelier_workers.adapters.base import ImageRequest, InMemoryResumeStore
from atelier_workers.adapters.comfyui import ComfyUIAdapter

ADAPTER = ComfyUIAdapter()

# Image-to-image: two LoadImage nodes fed from reference images.
WITH_REFERENCES: dict[str, Any] = {
    **COMFYUI_TEXT_TO_IMAGE,
    "10": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
    "11": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
    "12": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}},
    "13": {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}},
}
WITH_REFERENCES["3"] = {
    **COMFYUI_TEXT_TO_IMAGE["3"],
    "inputs": {**COMFYUI_TEXT_TO_IMAGE["3"]["inputs"], "latent_image": ["12", 0]},
}


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[str, FakeComfyUIState]]:
    yield from serve(create_comfyui_fake, FakeComfyUIState())


@pytest.fixture
def fake(fake_server: tuple[str, FakeComfyUIState]) -> FakeComfyUIState:
    _, state = fake_server
    state.reset()
    state.node_s, state.step_s, state.history_lag_s = 0.005, 0.01, 0.3
    return state


def _request(base_url: str, **overrides: Any) -> ImageRequest:
    config = {
        "workflow": COMFYUI_TEXT_TO_IMAGE,
        "node_map": COMFYUI_NODE_MAP,
        "poll_interval_s": 0.05,
    }
    config.update(overrides.pop("config", {}))
    values: dict[str, Any] = {
        "model": "default",
        "prompt": "a lighthouse on a cliff at dusk",
        "size": "320x256",
        "base_url": base_url,
        "timeout_s": 10.0,
        "provider_config": config,
    }
    return ImageRequest(**{**values, **overrides})


async def _fail(request: ImageRequest, client: httpx.AsyncClient) -> ProviderError:
    return await failure(ADAPTER, request, client)


# --- success -----------------------------------------------------------------------------


async def test_websocket_success_fills_the_workflow(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient
) -> None:
    seen = ProgressLog()
    store = InMemoryResumeStore()
    request = _request(
        base_url,
        seed=1234,
        negative_prompt="fog",
        model=COMFYUI_CHECKPOINT,
        options={"steps": 6},
        resume=store,
        on_progress=seen,
    )
    output = await ADAPTER.generate(request, client)

    [image] = output.images
    assert (image.width, image.height, image.seed) == (320, 256, 1234)
    [submit] = fake.submissions
    body = submit.body
    assert store.handle is not None
    assert body["prompt_id"] == store.handle["prompt_id"] == output.provider_request_id
    assert body["client_id"] == store.handle["client_id"]
    assert fake.ws_connections == [body["client_id"]]  # connected before submitting
    graph = body["prompt"]
    assert graph["6"]["inputs"]["text"] == "a lighthouse on a cliff at dusk"
    assert graph["7"]["inputs"]["text"] == "fog"
    assert graph["5"]["inputs"] == {"width": 320, "height": 256, "batch_size": 1}
    assert (graph["3"]["inputs"]["seed"], graph["3"]["inputs"]["steps"]) == (1234, 6)
    assert graph["4"]["inputs"]["ckpt_name"] == COMFYUI_CHECKPOINT
    assert COMFYUI_TEXT_TO_IMAGE["6"]["inputs"]["text"] == ""  # the profile's workflow is untouched
    fractions = [fraction for fraction, _ in seen if fraction]
    assert fractions and fractions[-1] == 1.0
    assert any(detail == "running" for _, detail in seen)
    views = [r.path for r in fake.requests if r.path.startswith("/view")]
    assert views == [f"/view?filename=t_{fake.file_counter:05d}_.png&subfolder=at&type=output"]


async def test_random_seed_is_chosen_and_reported(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient
) -> None:
    output = await ADAPTER.generate(_request(base_url), client)
    seed = fake.submissions[0].body["prompt"]["3"]["inputs"]["seed"]
    assert output.images[0].seed == seed
    assert fake.submissions[0].body["prompt"]["7"]["inputs"]["text"] == "lowres"  # default kept


async def test_no_seed_is_reported_when_the_node_map_has_no_seed_node(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient
) -> None:
    node_map = {role: target for role, target in COMFYUI_NODE_MAP.items() if role != "seed"}
    output = await ADAPTER.generate(
        _request(base_url, seed=5, config={"node_map": node_map}), client
    )
    # The workflow's own seed (0) made the image; ours never reached the graph.
    assert fake.submissions[0].body["prompt"]["3"]["inputs"]["seed"] == 0
    assert output.images[0].seed is None


async def test_a_workflow_without_text_input_runs_and_notes_the_prompt_was_not_used(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient
) -> None:
    # A blank image, inverted and saved: nothing in it takes text.
    workflow = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "b"}},
    }
    node_map = {"prompt": None, "width": "1.width", "height": "1.height"}
    request = _request(base_url, config={"workflow": workflow, "node_map": node_map})
    output = await ADAPTER.generate(request, client)

    [image] = output.images
    assert (image.width, image.height) == (320, 256)
    assert output.notes == [PROMPT_NOT_USED_NOTE]
    graph = fake.submissions[0].body["prompt"]
    assert graph["1"]["inputs"] == {"width": 320, "height": 256, "batch_size": 1, "color": 0}
    assert request.prompt not in str(graph)  # written nowhere


async def test_a_workflow_that_takes_the_prompt_has_no_note(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient
) -> None:
    assert (await ADAPTER.generate(_request(base_url), client)).notes == []


@pytest.mark.parametrize("mode", ["configured", "server-refuses"])
async def test_history_polling_without_a_websocket(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient, mode: str
) -> None:
    config: dict[str, Any] = {}
    if mode == "configured":
        config["use_websocket"] = False
    else:
        fake.websocket_enabled = False
    output = await ADAPTER.generate(_request(base_url, config=config), client)
    assert len(output.images) == 1
    assert fake.ws_connections == []
    assert any(r.path.startswith("/history/") for r in fake.requests)


async def test_open_webui_node_map_form(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient
) -> None:
    node_map = [
        {"type": "prompt", "node_ids": ["6"], "key": "text"},
        {"type": "width", "node_ids": ["5"], "key": "width"},
        {"type": "height", "node_ids": ["5"], "key": "height"},
        {"type": "n", "node_ids": ["5"], "key": "batch_size"},
        {"type": "seed", "node_ids": ["3"], "key": "seed"},
    ]
    output = await ADAPTER.generate(
        _request(base_url, seed=5, config={"node_map": node_map}), client
    )
    assert (output.images[0].width, output.images[0].seed) == (320, 5)
    assert fake.submissions[0].body["prompt"]["5"]["inputs"]["batch_size"] == 1


async def test_references_are_uploaded_and_wired_in(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient
) -> None:
    refs = (picture((255, 0, 0)), picture((0, 0, 255)))
    node_map = {**COMFYUI_NODE_MAP, "reference_image": {"node": ["10", "11"], "input": "image"}}
    config = {"workflow": WITH_REFERENCES, "node_map": node_map}
    request = _request(base_url, reference_images=refs, config=config)
    output = await ADAPTER.generate(request, client)

    names = [f"atelier/atelier-{hashlib.sha256(r.data).hexdigest()[:20]}.png" for r in refs]
    graph = fake.submissions[0].body["prompt"]
    assert graph["10"]["inputs"]["image"] == names[0]
    assert graph["11"]["inputs"]["image"] == names[1]
    uploads = [r for r in fake.requests if r.path == "/upload/image"]
    assert len(uploads) == 2
    assert uploads[0].body == {"type": "input", "subfolder": "atelier", "overwrite": "true"}
    # SaveImage's output wins over the PreviewImage (temp) one.
    assert len(output.images) == 1

    # A new task with the same pictures: same names, nothing renamed (the first request's own
    # resume store would resume its finished prompt instead).
    await ADAPTER.generate(_request(base_url, reference_images=refs, config=config), client)
    assert fake.submissions[1].body["prompt"]["10"]["inputs"]["image"] == names[0]


async def test_output_node_choice(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient
) -> None:
    fake.inputs[("", "missing.png")] = picture((1, 2, 3)).data
    node_map = {**COMFYUI_NODE_MAP, "output": {"node": "13"}}
    output = await ADAPTER.generate(
        _request(base_url, config={"workflow": WITH_REFERENCES, "node_map": node_map}), client
    )
    assert (output.images[0].width, output.images[0].height) == (320, 256)
    views = [r.path for r in fake.requests if r.path.startswith("/view")]
    assert views and all("type=temp" in path for path in views)


async def test_basic_auth_for_a_proxy(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient
) -> None:
    await ADAPTER.generate(_request(base_url, api_key="atelier:s3cret-pass"), client)
    expected = "Basic " + base64.b64encode(b"atelier:s3cret-pass").decode()
    assert all(r.headers.get("authorization") == expected for r in fake.requests)


async def test_history_that_lags_the_websocket(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient
) -> None:
    output = await ADAPTER.generate(_request(base_url, prompt="x [comfyui:history-lag]"), client)
    assert len(output.images) == 1


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error_class", "in_detail"),
    [
        ({"model": "nope.safetensors"}, ErrorClass.INVALID_REQUEST, "value_not_in_list"),
        (
            {"size": "20000x64"},
            ErrorClass.INVALID_REQUEST,
            "value_bigger_than_max",
        ),
        ({"prompt": "x [comfyui:execution-error]"}, ErrorClass.PROVIDER_UNAVAILABLE, "OutOfMemory"),
        ({"prompt": "x [comfyui:no-output]"}, ErrorClass.NO_IMAGE_RETURNED, "without output"),
        ({"prompt": "x [comfyui:missing-file]"}, ErrorClass.NO_IMAGE_RETURNED, "/view"),
        ({"prompt": "x [comfyui:500]"}, ErrorClass.PROVIDER_UNAVAILABLE, "HTTP 500"),
    ],
)
async def test_failures_map_to_the_taxonomy(
    fake: FakeComfyUIState,
    base_url: str,
    client: httpx.AsyncClient,
    overrides: dict[str, Any],
    error_class: ErrorClass,
    in_detail: str,
) -> None:
    store = InMemoryResumeStore()
    error = await _fail(_request(base_url, resume=store, **overrides), client)
    assert error.info.error_class is error_class
    assert in_detail in (error.info.detail or "")
    assert error.info.message
    assert store.handle == {}  # final: a retry submits anew


async def test_unknown_node_class_is_invalid_request(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient
) -> None:
    workflow = {**COMFYUI_TEXT_TO_IMAGE, "99": {"class_type": "NotANode", "inputs": {}}}
    error = await _fail(_request(base_url, config={"workflow": workflow}), client)
    assert error.info.error_class is ErrorClass.INVALID_REQUEST
    assert "NotANode does not exist" in (error.info.detail or "")


@pytest.mark.parametrize(
    "config",
    [
        {"workflow": None},
        {"workflow": "{not json"},
        {"workflow": {"nodes": [], "links": []}},
        {"node_map": {}},
        {"node_map": {"prompt": {"node": "404", "input": "text"}}},
        {"node_map": {"prompt": {"node": "6"}}},
        {"node_map": {"prompt": "6.txt"}},  # saved before profiles checked node inputs
        {"node_map": {**COMFYUI_NODE_MAP, "output": {"node": "90"}}},
        {"node_map": {"colour": "6.text"}},
        {"node_map": COMFYUI_NODE_MAP, "reference_images": 1},  # no reference_image node for it
        {"node_map": {**COMFYUI_NODE_MAP, "reference_image": "10.image"}, "reference_images": 2},
        {"poll_interval_s": 0},
    ],
)
async def test_bad_profiles_fail_before_anything_is_sent(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient, config: dict[str, Any]
) -> None:
    config = dict(config)
    refs = tuple(picture((i, i, i)) for i in range(config.pop("reference_images", 0)))
    if refs:
        config["workflow"] = WITH_REFERENCES
    # Counted from here: a late request of an earlier test may still arrive.
    seen = len(fake.requests)
    error = await _fail(_request(base_url, config=config, reference_images=refs), client)
    assert error.info.error_class is ErrorClass.INVALID_REQUEST
    assert fake.requests[seen:] == []  # not even an upload


async def test_unreachable_server_is_provider_unavailable(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = await _fail(_request(f"http://127.0.0.1:{port}"), client)
    assert error.info.error_class is ErrorClass.PROVIDER_UNAVAILABLE


async def test_slow_prompt_times_out_and_keeps_its_handle(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient
) -> None:
    fake.step_s = 0.5
    store = InMemoryResumeStore()
    error = await _fail(_request(base_url, timeout_s=0.5, resume=store), client)
    assert error.info.error_class is ErrorClass.TIMEOUT
    assert store.handle and store.handle["provider"] == "comfyui"
    fake.interrupt_requested = True  # don't leave the slow prompt running for the next test
    await wait_until(lambda: fake.running is None, "the slow prompt stopped")


# --- cancel and resume -------------------------------------------------------------------


async def test_cancel_interrupts_our_running_prompt(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient
) -> None:
    fake.step_s = 0.2
    store = InMemoryResumeStore()
    request = _request(base_url, resume=store)
    task = asyncio.create_task(ADAPTER.generate(request, client))
    await wait_until(lambda: fake.running is not None, "the prompt started")
    assert store.handle is not None

    await ADAPTER.cancel(request, store.handle, client)

    with pytest.raises(ProviderError) as caught:
        await task
    assert caught.value.error_class is ErrorClass.CANCELLED
    [interrupt] = [r for r in fake.requests if r.path == "/interrupt"]
    assert interrupt.body == {"prompt_id": fake.submissions[0].body["prompt_id"]}


async def test_cancel_deletes_a_pending_prompt_and_leaves_others_running(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient
) -> None:
    fake.step_s = 0.1
    other = asyncio.create_task(ADAPTER.generate(_request(base_url, prompt="someone else"), client))
    await wait_until(lambda: fake.running is not None, "the other prompt started")
    store = InMemoryResumeStore()
    request = _request(base_url, resume=store)
    mine = asyncio.create_task(ADAPTER.generate(request, client))
    await wait_until(lambda: bool(fake.pending), "our prompt is queued")
    assert store.handle is not None

    await ADAPTER.cancel(request, store.handle, client)

    assert fake.pending == []
    assert not [r for r in fake.requests if r.path == "/interrupt"]  # not ours: left alone
    with pytest.raises(ProviderError) as caught:
        await mine  # it vanished from the queue and never reaches history
    assert caught.value.error_class is ErrorClass.PROVIDER_UNAVAILABLE
    assert len((await other).images) == 1


async def test_resume_after_restart_submits_once(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient
) -> None:
    fake.step_s = 0.05
    store = InMemoryResumeStore()
    first = asyncio.create_task(ADAPTER.generate(_request(base_url, resume=store), client))
    await wait_until(lambda: fake.running is not None, "the prompt started")
    assert store.handle is not None
    handle = dict(store.handle)
    first.cancel()  # the worker dies mid-wait
    with pytest.raises(asyncio.CancelledError):
        await first

    output = await ADAPTER.generate(_request(base_url, resume=store), client)

    assert len(fake.submissions) == 1
    assert output.provider_request_id == handle["prompt_id"]
    assert output.images[0].seed == handle["seed"]
    # The second worker listened on the same client id, so it heard the prompt's events.
    assert fake.ws_connections == [handle["client_id"], handle["client_id"]]


async def test_resume_of_a_prompt_that_finished_meanwhile(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient
) -> None:
    store = InMemoryResumeStore()
    first = asyncio.create_task(ADAPTER.generate(_request(base_url, resume=store), client))
    await wait_until(lambda: fake.running is not None, "the prompt started")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await wait_until(lambda: bool(fake.history), "the prompt finished")

    output = await ADAPTER.generate(_request(base_url, resume=store), client)
    assert len(output.images) == 1
    assert len(fake.submissions) == 1


async def test_resume_after_comfyui_restarted_submits_again(
    fake: FakeComfyUIState, base_url: str, client: httpx.AsyncClient
) -> None:
    fake.step_s = 0.05
    store = InMemoryResumeStore()
    first = asyncio.create_task(ADAPTER.generate(_request(base_url, resume=store), client))
    await wait_until(lambda: fake.running is not None, "the prompt started")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    fake.interrupt_requested = True
    await wait_until(lambda: fake.running is None, "the old prompt stopped")
    fake.restart()  # queue and history are gone

    output = await ADAPTER.generate(_request(base_url, resume=store), client)
    assert len(output.images) == 1
    assert len(fake.submissions) == 2


def test_node_map_forms() -> None:
    parsed = parse_node_map(
        {"prompt": "6.text", "seed": [{"node": "3", "input": "seed"}, "9.noise_seed"]}
    )
    assert [(t.node, t.input) for t in parsed["seed"]] == [("3", "seed"), ("9", "noise_seed")]
    webui = parse_node_map(
        [
            {"type": "prompt", "node_ids": ["6"], "key": "text"},
            {"type": "image", "node_ids": ["10", 11], "key": "image"},
        ]
    )
    assert [t.node for t in webui["reference_image"]] == ["10", "11"]
    assert parse_node_map({"prompt": None}) == {"prompt": []}  # a workflow without text


def test_max_images_per_call() -> None:
    assert ADAPTER.max_images_per_call("anything") == 1
