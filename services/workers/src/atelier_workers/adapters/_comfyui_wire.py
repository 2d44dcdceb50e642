"""What ComfyUI's workflows and answers look like, apart from the calls that carry them
(`comfyui.py`): the profile's workflow filled in through its node map, the images a history
entry names, the prompt ids in the queue, and its errors mapped onto the shared taxonomy.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from atelier_contracts.comfyui import ComfyConfig, ComfyConfigError, NodeTarget, checked_config
from atelier_contracts.errors import ErrorClass
from atelier_workers.adapters import _http
from atelier_workers.adapters.base import ImageRequest, ProviderError, parse_size


def fill_workflow(request: ImageRequest, seed: int, uploaded: list[str]) -> dict[str, Any]:
    """The workflow with this request's values written in; `invalid_request` if the
    profile's workflow or node map cannot take them."""
    width, height = parse_size(request.size)
    config = checked(request)
    graph = copy.deepcopy(config.workflow)
    node_map = config.node_map
    values: dict[str, Any] = {
        "prompt": request.prompt,  # written nowhere when the map says "prompt": null
        "width": width,
        "height": height,
        "seed": seed,
        "batch_size": request.n,
    }
    if request.negative_prompt is not None:
        values["negative_prompt"] = request.negative_prompt
    steps = request.options.get("steps")
    if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0:
        values["steps"] = steps
    if request.model and request.model not in ("default", "workflow"):
        values["model"] = request.model
    for role, value in values.items():
        for target in node_map.get(role, []):
            _set_input(graph, target, value)
    reference_nodes = node_map.get("reference_image", [])
    if len(request.reference_images) > len(reference_nodes):
        raise ProviderError.of(
            ErrorClass.INVALID_REQUEST,
            f"{len(request.reference_images)} reference images, but the node map has "
            f"{len(reference_nodes)} reference_image node(s) for them",
        )
    for target, name in zip(reference_nodes, uploaded, strict=False):
        _set_input(graph, target, name)
    return graph


def checked(request: ImageRequest) -> ComfyConfig:
    """The profile's workflow and node map, checked against each other."""
    try:
        return checked_config(request.provider_config)
    except ComfyConfigError as exc:
        raise ProviderError.of(ErrorClass.INVALID_REQUEST, str(exc)) from exc


def error_from_response(response: httpx.Response, secrets: tuple[str | None, ...]) -> ProviderError:
    """Map a ComfyUI answer (or its proxy's) other than 200 onto the shared taxonomy."""
    status = response.status_code
    body = _http.json_or_none(response)
    detail = _error_detail(response, body)

    # A 401/403/429 comes from a proxy in front: ComfyUI itself has neither auth nor limits.
    return _http.error_for_status(status, response.headers, detail, secrets)


def _set_input(graph: dict[str, Any], target: NodeTarget, value: Any) -> None:
    # checked_config made sure the node and its input exist (and that only `output` has none).
    assert target.input is not None
    graph[target.node]["inputs"][target.input] = value


def _error_detail(response: httpx.Response, body: Any) -> str:
    parts = [f"HTTP {response.status_code}"]
    if not isinstance(body, dict):
        return " ".join([*parts, response.text[:300]])
    error = body.get("error")
    if isinstance(error, dict):
        parts.append(f"{error.get('type')}: {error.get('message')}")
        if error.get("details"):
            parts.append(str(error["details"])[:200])
    elif error is not None:
        parts.append(str(error))
    node_errors = body.get("node_errors")
    if isinstance(node_errors, dict):
        for node_id, info in list(node_errors.items())[:5]:
            if not isinstance(info, dict):
                continue
            for item in info.get("errors", [])[:3]:
                if isinstance(item, dict):
                    parts.append(
                        f"node {node_id} ({info.get('class_type')}): {item.get('type')}: "
                        f"{item.get('message')} {item.get('details') or ''}".strip()
                    )
    return " | ".join(parts)


def execution_error(data: dict[str, Any], secrets: tuple[str | None, ...]) -> ProviderError:
    detail = (
        f"prompt {data.get('prompt_id')} failed in node {data.get('node_id')} "
        f"({data.get('node_type')}): {data.get('exception_type')}: "
        f"{data.get('exception_message')}"
    )
    return ProviderError.of(ErrorClass.PROVIDER_UNAVAILABLE, detail, secrets=secrets)


def history_failure(
    prompt_id: str, status: dict[str, Any], secrets: tuple[str | None, ...]
) -> ProviderError:
    for message in status.get("messages", []):
        if not isinstance(message, list) or len(message) != 2:
            continue
        kind, data = message
        if kind == "execution_interrupted":
            return ProviderError.of(ErrorClass.CANCELLED, f"prompt {prompt_id} was interrupted")
        if kind == "execution_error" and isinstance(data, dict):
            return execution_error(data, secrets)
    return ProviderError.of(ErrorClass.PROVIDER_UNAVAILABLE, f"prompt {prompt_id} ended in error")


def output_files(outputs: Any, wanted: list[str]) -> list[dict[str, str]]:
    """The images to fetch: the wanted nodes' if named, else every saved (`output`) image,
    else previews (`temp`) as a last resort."""
    if not isinstance(outputs, dict):
        return []
    found: dict[str, list[dict[str, str]]] = {"output": [], "temp": []}
    for node_id, output in outputs.items():
        if wanted and str(node_id) not in wanted:
            continue
        images = output.get("images") if isinstance(output, dict) else None
        for image in images if isinstance(images, list) else []:
            if not isinstance(image, dict) or not isinstance(image.get("filename"), str):
                continue
            kind = str(image.get("type") or "output")
            file = {
                "filename": image["filename"],
                "subfolder": str(image.get("subfolder") or ""),
                "type": kind,
            }
            found.setdefault(kind, []).append(file)
    if wanted:
        return [file for files in found.values() for file in files]
    return found["output"] or found["temp"]


def queue_ids(items: Any) -> set[str]:
    # Each item is [number, prompt_id, prompt, extra_data, outputs_to_execute].
    if not isinstance(items, list):
        return set()
    return {str(item[1]) for item in items if isinstance(item, list) and len(item) > 1}


def ws_url(base: str, client_id: str) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, f"{parts.path}/ws", f"clientId={client_id}", ""))
