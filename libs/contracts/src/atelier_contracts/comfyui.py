"""A ComfyUI profile's workflow and node map: what they must look like, in one place.

The profiles service refuses a profile whose node map does not fit its workflow (so it is not
saved only to fail every job), the ComfyUI worker fills the workflow in through the same parse,
and the context service notes on a job when the workflow takes no text. docs/providers.md
("comfyui") describes the settings for admins.

`provider_config`:
- `workflow`: the API-format graph `{node_id: {class_type, inputs}}`, or its JSON text.
- `node_map`: role → `{"node": "6", "input": "text"}`, `"6.text"`, a list of those, or
  `{"node": ["10", "11"], "input": "image"}`; or Open WebUI's list form
  `[{"type", "node_ids", "key"}]`. `prompt` is required; `"prompt": null` (map form only) says
  the workflow has no text input, so the prompt is deliberately not used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROVIDER = "comfyui"
ROLES = (
    "prompt",
    "negative_prompt",
    "width",
    "height",
    "seed",
    "batch_size",
    "steps",
    "model",
    "reference_image",
    "output",
)
# Open WebUI's node-map type names for the roles that differ.
OPEN_WEBUI_TYPES = {"n": "batch_size", "image": "reference_image", "ckpt": "model"}
# On a job (its assembly notes) whose profile's workflow takes no text.
PROMPT_NOT_USED_NOTE = "This profile's workflow takes no text: the prompt is not used."

_WORKFLOW = "provider_config.workflow"
_NODE_MAP = "provider_config.node_map"
_MOST_NAMES_LISTED = 12
_EXAMPLE = '{"node": "6", "input": "text"}'
_PROMPT_HINT = (
    f'say which node input takes the prompt, e.g. {{"prompt": {_EXAMPLE}}}, or set '
    '"prompt": null if the workflow takes no text'
)


class ComfyConfigError(ValueError):
    """The workflow or node map cannot work; `problems` each name the setting and the fix."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class NodeTarget:
    node: str
    input: str | None  # None only for `output`, which names nodes, not inputs


# Role → the inputs it writes. `prompt` is always present: an empty list when the map says
# `"prompt": null` (the workflow takes no text).
NodeMap = dict[str, list[NodeTarget]]


@dataclass(frozen=True)
class ComfyConfig:
    workflow: dict[str, Any]
    node_map: NodeMap


def prompt_not_used(config: Mapping[str, Any]) -> bool:
    """Whether the node map says, with `"prompt": null`, that the workflow takes no text."""
    node_map = config.get("node_map")
    return isinstance(node_map, dict) and "prompt" in node_map and node_map["prompt"] is None


def checked_config(config: Mapping[str, Any]) -> ComfyConfig:
    """The workflow and the parsed node map, after checking that every node the map names is in
    the workflow and has the input the map writes; raises ComfyConfigError with every problem."""
    problems: list[str] = []
    workflow: dict[str, Any] | None = None
    try:
        workflow = workflow_of(config)
    except ComfyConfigError as exc:
        problems.extend(exc.problems)
    # The entries that parse are checked against the workflow even when others do not.
    node_map, map_problems = _parse_node_map(config.get("node_map"))
    problems.extend(map_problems)
    if workflow is not None:
        problems.extend(_fit_problems(workflow, node_map))
    if problems:
        raise ComfyConfigError(problems)
    assert workflow is not None
    return ComfyConfig(workflow, node_map)


def config_problems(config: Mapping[str, Any]) -> list[str]:
    """Every problem `checked_config` finds (none: the profile's jobs can fill the workflow)."""
    try:
        checked_config(config)
    except ComfyConfigError as exc:
        return exc.problems
    return []


def workflow_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The profile's API-format workflow (a map or its JSON text)."""
    raw = config.get("workflow")
    if raw is None:
        raise ComfyConfigError(
            [
                f"{_WORKFLOW}: missing (paste the workflow as ComfyUI exports it with "
                "'Export (API)' or 'Save (API)': {node_id: {class_type, inputs}})"
            ]
        )
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ComfyConfigError([f"{_WORKFLOW}: not JSON ({exc})"]) from exc
    if not isinstance(raw, dict) or not raw:
        raise ComfyConfigError(
            [f"{_WORKFLOW}: must be an API-format graph {{node_id: {{class_type, inputs}}}}"]
        )
    if "nodes" in raw and "links" in raw:
        raise ComfyConfigError(
            [f"{_WORKFLOW}: this is a UI-format workflow, export it with 'Export (API)'"]
        )
    return raw


def parse_node_map(raw: Any) -> NodeMap:
    """Role → targets, from Atelier's map form or Open WebUI's list form; raises
    ComfyConfigError with every entry that is malformed."""
    node_map, problems = _parse_node_map(raw)
    if problems:
        raise ComfyConfigError(problems)
    return node_map


def _parse_node_map(raw: Any) -> tuple[NodeMap, list[str]]:
    """The entries that parse, and a problem for each one that does not."""
    if raw is None:
        return {}, [f"{_NODE_MAP}: missing ({_PROMPT_HINT})"]
    entries: list[tuple[str, Any, Any]] = []
    problems: list[str] = []
    prompt_null = False
    if isinstance(raw, dict):
        for role, spec in raw.items():
            if spec is None:
                if role == "prompt":
                    prompt_null = True
                else:
                    problems.append(
                        f"{_NODE_MAP}.{role}: null is only for `prompt` (a workflow without "
                        f"text input), leave {role} out instead"
                    )
                continue
            for item in spec if isinstance(spec, list) else [spec]:
                if isinstance(item, str) and "." in item:
                    node, _, input_name = item.partition(".")
                    entries.append((str(role), node, input_name))
                elif isinstance(item, dict):
                    entries.append((str(role), item.get("node"), item.get("input")))
                else:
                    entries.append((str(role), None, None))
    elif isinstance(raw, list):
        for index, item in enumerate(raw):
            if not isinstance(item, dict):
                problems.append(
                    f"{_NODE_MAP}[{index}]: expected {{type, node_ids, key}}, got {item!r:.60}"
                )
                continue
            kind = str(item.get("type"))
            entries.append(
                (OPEN_WEBUI_TYPES.get(kind, kind), item.get("node_ids"), item.get("key"))
            )
    else:
        return {}, [f"{_NODE_MAP}: must be a map of role to node input ({_PROMPT_HINT})"]
    result: NodeMap = {"prompt": []} if prompt_null else {}
    for role, nodes, input_name in entries:
        where = f"{_NODE_MAP}.{role}"
        if role not in ROLES:
            problems.append(f"{where}: not a role (the roles are {', '.join(ROLES)})")
            continue
        node_ids = nodes if isinstance(nodes, list) else [nodes]
        if not node_ids or not all(_is_node_id(n) for n in node_ids):
            problems.append(f"{where}: names no node (e.g. {_EXAMPLE})")
            continue
        if role != "output" and (not isinstance(input_name, str) or not input_name):
            problems.append(f"{where}: names no input (e.g. {_EXAMPLE})")
            continue
        result.setdefault(role, []).extend(
            NodeTarget(str(node), input_name if isinstance(input_name, str) else None)
            for node in node_ids
        )
    if "prompt" not in result and not any(p.startswith(f"{_NODE_MAP}.prompt:") for p in problems):
        problems.append(f"{_NODE_MAP}.prompt: missing ({_PROMPT_HINT})")
    return result, problems


def _is_node_id(node: Any) -> bool:
    return isinstance(node, str | int) and not isinstance(node, bool) and bool(str(node))


def _fit_problems(workflow: dict[str, Any], node_map: NodeMap) -> list[str]:
    """Map entries naming a node the workflow lacks, or an input that node does not have."""
    problems: list[str] = []
    for role, targets in node_map.items():
        where = f"{_NODE_MAP}.{role}"
        for target in targets:
            node = workflow.get(target.node)
            if node is None:
                problems.append(
                    f"{where}: the workflow has no node {target.node!r} "
                    f"(its nodes: {_names(workflow)})"
                )
                continue
            inputs = node.get("inputs") if isinstance(node, dict) else None
            if not isinstance(inputs, dict):
                problems.append(
                    f"{_WORKFLOW}: node {target.node!r} has no `inputs` map (export the "
                    "workflow with 'Export (API)')"
                )
                continue
            if target.input is not None and role != "output" and target.input not in inputs:
                kind = node.get("class_type")
                what = f"a {kind}" if isinstance(kind, str) and kind else "a node"
                problems.append(
                    f"{where}: node {target.node!r} has no input {target.input!r} "
                    f"({what} with inputs {_names(inputs)})"
                )
    return problems


def _names(items: Mapping[str, Any]) -> str:
    names = [str(key) for key in items]  # in the workflow's own order
    if not names:
        return "none"
    more = len(names) - _MOST_NAMES_LISTED
    return ", ".join(names[:_MOST_NAMES_LISTED]) + (f", and {more} more" if more > 0 else "")
