"""A ComfyUI profile is checked against its own workflow when it is saved: every node its node
map names is in the workflow and has the input the map writes, and the prompt goes somewhere
unless the map says, with `"prompt": null`, that the workflow takes no text."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from atelier_contracts.errors import InvalidInput
from atelier_contracts.profiles import ProfileCommandReply, ProfileCreateCommand, ProfileFields
from atelier_contracts.subjects import Subject
from atelier_contracts.testing import QUERY_TIMEOUT_S
from atelier_messaging import query
from atelier_profiles.validation import validate_profile, workflow_problems

from .conftest import RunningApp, profile_fields

# ComfyUI's default text-to-image workflow, as "Export (API)" writes it.
DEFAULT_WORKFLOW: dict[str, Any] = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 156680208700286,
            "steps": 20,
            "cfg": 8,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}},
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 512, "height": 512, "batch_size": 1},
    },
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a bottle", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}
DEFAULT_NODE_MAP: dict[str, Any] = {
    "prompt": {"node": "6", "input": "text"},
    "negative_prompt": "7.text",
    "width": "5.width",
    "height": "5.height",
    "batch_size": "5.batch_size",
    "seed": [{"node": "3", "input": "seed"}],
    "steps": "3.steps",
    "model": "4.ckpt_name",
    "output": {"node": "9"},
}
# A workflow with no text input at all: a blank image, inverted, saved.
NO_TEXT_WORKFLOW: dict[str, Any] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 512, "height": 512, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "blank"}},
}
NO_TEXT_NODE_MAP: dict[str, Any] = {"prompt": None, "width": "1.width", "height": "1.height"}


def comfyui_profile(
    workflow: Any = DEFAULT_WORKFLOW, node_map: Any = DEFAULT_NODE_MAP, **overrides: Any
) -> ProfileFields:
    config: dict[str, Any] = {}
    if workflow is not None:
        config["workflow"] = workflow
    if node_map is not None:
        config["node_map"] = node_map
    values: dict[str, Any] = {
        "name": "Local SD",
        "provider": "comfyui",
        "model": "default",
        "base_url": None,
        "options": [{"name": "steps", "kind": "integer", "minimum": 1, "maximum": 50}],
        "provider_config": config,
    }
    return profile_fields(**(values | overrides))


def _problems(**overrides: Any) -> str:
    with pytest.raises(InvalidInput) as caught:
        validate_profile(comfyui_profile(**overrides))
    assert caught.value.status_code == 422
    return caught.value.message


def test_the_default_workflow_with_its_node_map_is_accepted() -> None:
    assert workflow_problems(comfyui_profile()) == []
    validate_profile(comfyui_profile())


def test_open_webui_list_form_is_accepted() -> None:
    node_map = [
        {"type": "prompt", "node_ids": ["6"], "key": "text"},
        {"type": "n", "node_ids": [5], "key": "batch_size"},
        {"type": "ckpt", "node_ids": ["4"], "key": "ckpt_name"},
    ]
    assert workflow_problems(comfyui_profile(node_map=node_map)) == []


def test_a_workflow_given_as_json_text_is_read() -> None:
    assert workflow_problems(comfyui_profile(workflow=json.dumps(DEFAULT_WORKFLOW))) == []


def test_a_node_id_missing_from_the_workflow_is_named() -> None:
    message = _problems(node_map={**DEFAULT_NODE_MAP, "seed": "30.seed"})
    assert "provider_config.node_map.seed: the workflow has no node '30'" in message
    assert "its nodes: 3, 4, 5, 6, 7, 8, 9" in message


def test_a_node_without_that_input_is_named_with_the_inputs_it_has() -> None:
    # An SDXL text encoder has text_g and text_l, not text.
    workflow = copy.deepcopy(DEFAULT_WORKFLOW)
    workflow["6"] = {
        "class_type": "CLIPTextEncodeSDXL",
        "inputs": {"text_g": "", "text_l": "", "clip": ["4", 1]},
    }
    message = _problems(workflow=workflow)
    assert (
        "provider_config.node_map.prompt: node '6' has no input 'text' "
        "(a CLIPTextEncodeSDXL with inputs text_g, text_l, clip)"
    ) in message


def test_a_missing_output_node_and_reference_input_are_named() -> None:
    node_map = {**DEFAULT_NODE_MAP, "output": {"node": "90"}, "reference_image": "4.image"}
    message = _problems(node_map=node_map)
    assert "provider_config.node_map.output: the workflow has no node '90'" in message
    assert "provider_config.node_map.reference_image: node '4' has no input 'image'" in message


def test_an_explicit_no_text_workflow_is_accepted() -> None:
    fields = comfyui_profile(workflow=NO_TEXT_WORKFLOW, node_map=NO_TEXT_NODE_MAP)
    assert workflow_problems(fields) == []
    validate_profile(fields)


def test_a_node_map_without_a_prompt_entry_says_how_to_declare_no_text() -> None:
    message = _problems(workflow=NO_TEXT_WORKFLOW, node_map={"width": "1.width"})
    assert "provider_config.node_map.prompt: missing" in message
    assert '"prompt": null if the workflow takes no text' in message


@pytest.mark.parametrize(
    ("node_map", "expected"),
    [
        (None, "provider_config.node_map: missing"),
        ({}, "provider_config.node_map.prompt: missing"),
        ({"prompt": []}, "provider_config.node_map.prompt: missing"),
        ({"prompt": "6.text", "seed": None}, "node_map.seed: null is only for `prompt`"),
        ({"prompt": {"node": "6"}}, "provider_config.node_map.prompt: names no input"),
        ({"prompt": {"input": "text"}}, "provider_config.node_map.prompt: names no node"),
        ({"prompt": "6.text", "colour": "6.text"}, "provider_config.node_map.colour: not a role"),
        ("6.text", "provider_config.node_map: must be a map of role to node input"),
    ],
)
def test_malformed_node_maps_are_refused(node_map: Any, expected: str) -> None:
    assert expected in _problems(node_map=node_map)


@pytest.mark.parametrize(
    ("workflow", "expected"),
    [
        (None, "provider_config.workflow: missing (paste the workflow as ComfyUI exports it"),
        ("{not json", "provider_config.workflow: not JSON"),
        ({"nodes": [], "links": []}, "provider_config.workflow: this is a UI-format workflow"),
        ({"6": "CLIPTextEncode"}, "provider_config.workflow: node '6' has no `inputs` map"),
    ],
)
def test_a_missing_or_unusable_workflow_is_refused(workflow: Any, expected: str) -> None:
    assert expected in _problems(workflow=workflow, node_map={"prompt": "6.text"})


def test_every_problem_is_reported_at_once() -> None:
    node_map = {"prompt": "6.txt", "seed": None, "width": "50.width"}
    message = _problems(node_map=node_map)
    assert "node_map.seed: null is only for `prompt`" in message
    assert "node_map.prompt: node '6' has no input 'txt'" in message
    assert "node_map.width: the workflow has no node '50'" in message


def test_other_providers_keep_their_provider_config_unchecked() -> None:
    # `workflow` and `node_map` mean nothing to the offline provider.
    fields = profile_fields(provider_config={"node_map": {"prompt": "404.text"}})
    assert workflow_problems(fields) == []


# --- through the admin API and the app's admin commands (NATS) --------------------------------


async def test_saving_a_bad_comfyui_profile_answers_422_naming_node_and_input(
    running_app: RunningApp,
) -> None:
    client = running_app.client
    bad = {**DEFAULT_NODE_MAP, "prompt": {"node": "6", "input": "txt"}}
    expected = "provider_config.node_map.prompt: node '6' has no input 'txt'"

    response = await client.post(
        "/admin/v1/profiles", json=comfyui_profile(node_map=bad).model_dump(mode="json")
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert expected in error["message"]
    assert running_app.changes == []

    created = await client.post(
        "/admin/v1/profiles", json=comfyui_profile().model_dump(mode="json")
    )
    assert created.status_code == 201, created.text
    profile_id = created.json()["id"]
    replaced = await client.put(
        f"/admin/v1/profiles/{profile_id}",
        json=comfyui_profile(node_map=bad).model_dump(mode="json"),
    )
    assert replaced.status_code == 422 and expected in replaced.json()["error"]["message"]
    patched = await client.patch(
        f"/admin/v1/profiles/{profile_id}",
        json={"provider_config": {"workflow": NO_TEXT_WORKFLOW, "node_map": DEFAULT_NODE_MAP}},
    )
    assert patched.status_code == 422
    assert "the workflow has no node '6'" in patched.json()["error"]["message"]
    patched = await client.patch(
        f"/admin/v1/profiles/{profile_id}",
        json={"provider_config": {"workflow": NO_TEXT_WORKFLOW, "node_map": NO_TEXT_NODE_MAP}},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["provider_config"]["node_map"]["prompt"] is None


async def test_the_apps_admin_command_is_refused_the_same_way(running_app: RunningApp) -> None:
    bad = {**DEFAULT_NODE_MAP, "seed": "30.seed"}
    reply = await query(
        running_app.broker,
        Subject.PROFILES_CREATE,
        ProfileCreateCommand(fields=comfyui_profile(node_map=bad), requested_by="admin"),
        ProfileCommandReply,
        timeout=QUERY_TIMEOUT_S,
    )
    assert reply.profile is None and reply.error is not None
    assert reply.error.status == 422
    assert "provider_config.node_map.seed: the workflow has no node '30'" in reply.error.message
