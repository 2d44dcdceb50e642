"""docs/providers.md's capability table says what the code does.

Each row is checked against `capabilities()` and `images_per_call()` (contracts) for a few models
of the provider, and against its adapter (does it report progress, can it cancel).
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import pytest

from atelier_contracts.providers import (
    BFL_MAX_PIXELS,
    GEMINI_ASPECT_RATIOS,
    KNOWN_PROVIDERS,
    STABILITY_ASPECT_RATIOS,
    WORKERSAI_MAX_SIDE,
    capabilities,
    images_per_call,
)
from atelier_workers.adapters import ADAPTERS

DOC = Path(__file__).resolve().parents[3] / "docs" / "providers.md"
COLUMNS = ("sizes", "n", "seed", "negative_prompt", "references", "progress", "cancel")
# Models each row speaks of (the first is the provider's usual one).
MODELS = {
    "offline": ["offline-sketch"],
    "openai": ["gpt-image-1", "dall-e-3", "dall-e-2"],
    "openrouter": ["google/gemini-2.5-flash-image"],
    "gemini": ["gemini-3-pro-image-preview"],
    "stability": ["core", "ultra", "sd3.5-large"],
    "bfl": ["flux-2-pro", "flux-kontext-pro", "flux-pro-1.1"],
    "workersai": [
        "@cf/stabilityai/stable-diffusion-xl-base-1.0",
        "@cf/black-forest-labs/flux-2-dev",
    ],
    "falai": ["fal-ai/flux/dev"],
    "replicate": ["black-forest-labs/flux-schnell"],
    "comfyui": ["default"],
    "stable-diffusion": ["default"],
}
# A whole number standing alone: not part of a name (`sd3`), a decimal (0.7) or code in backticks.
_NUMBER_RE = re.compile(r"(?<![\w.])\d+(?![\w.])")
_CODE_RE = re.compile(r"`[^`]*`")


def _table() -> dict[str, dict[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Capability table", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, dict[str, str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != len(COLUMNS) + 1 or cells[0] in ("provider", "---"):
            continue
        rows[cells[0]] = dict(zip(COLUMNS, cells[1:], strict=True))
    return rows


TABLE = _table()


def _numbers(cell: str) -> set[int]:
    return {int(number) for number in _NUMBER_RE.findall(_CODE_RE.sub("", cell))}


def test_every_provider_has_a_row() -> None:
    assert set(TABLE) == set(KNOWN_PROVIDERS) == set(MODELS) == set(ADAPTERS)


@pytest.mark.parametrize("provider", sorted(MODELS))
def test_images_per_call(provider: str) -> None:
    cell = TABLE[provider]["n"]
    first = MODELS[provider][0]
    assert cell.split()[0] == str(images_per_call(provider, first)), cell
    for model in MODELS[provider][1:]:
        per_call = images_per_call(provider, model)
        assert f"{model}: {per_call}" in cell or cell.startswith(str(per_call)), (model, cell)


@pytest.mark.parametrize("provider", sorted(MODELS))
@pytest.mark.parametrize("option", ["seed", "negative_prompt"])
def test_seed_and_negative_prompt(provider: str, option: str) -> None:
    cell = TABLE[provider][option]
    allowed = {
        option not in capabilities(provider, model).refused_options for model in MODELS[provider]
    }
    if allowed == {True}:
        assert "✖" not in cell, cell
    elif allowed == {False}:
        assert cell.startswith("✖"), cell
    else:
        assert "✔" in cell and "✖" in cell, cell


@pytest.mark.parametrize("provider", sorted(MODELS))
def test_reference_images(provider: str) -> None:
    cell = TABLE[provider]["references"]
    limits = {capabilities(provider, model).max_reference_images for model in MODELS[provider]}
    if limits == {None}:
        # Not limited by Atelier: the model, app or workflow decides (and the doc says so).
        assert not _numbers(cell) - {1}, cell  # "takes one" for single-image fields only
        return
    numbers = _numbers(cell)
    for limit in limits:
        assert limit is not None
        assert limit in numbers or (limit == 0 and "none" in cell), (limit, cell)
    assert numbers <= limits, cell


@pytest.mark.parametrize("provider", sorted(MODELS))
def test_progress_and_cancel(provider: str) -> None:
    adapter = ADAPTERS[provider]
    source = inspect.getsource(sys.modules[type(adapter).__module__])
    reports = "report_progress(" in source
    assert TABLE[provider]["progress"].startswith("✖") != reports, TABLE[provider]["progress"]
    cancels = callable(getattr(adapter, "cancel", None))
    assert TABLE[provider]["cancel"].startswith("✔") == cancels, TABLE[provider]["cancel"]


def test_sizes_and_ratios() -> None:
    assert _ratios(TABLE["openrouter"]["sizes"]) == set(GEMINI_ASPECT_RATIOS)
    assert _ratios(TABLE["stability"]["sizes"]) == set(STABILITY_ASPECT_RATIOS)
    assert f"≤ {BFL_MAX_PIXELS // (1024 * 1024)} MP" in TABLE["bfl"]["sizes"]
    assert capabilities("bfl", "flux-pro-1.1").max_pixels == BFL_MAX_PIXELS
    assert f"256\N{EN DASH}{WORKERSAI_MAX_SIDE}" in TABLE["workersai"]["sizes"]
    for model in ("gpt-image-1", "dall-e-3", "dall-e-2"):
        sizes = capabilities("openai", model).sizes
        assert sizes is not None and set(sizes) <= set(
            re.findall(r"\d+x\d+", TABLE["openai"]["sizes"])
        )


def _ratios(cell: str) -> set[str]:
    return set(re.findall(r"\b\d+:\d+\b", cell))
