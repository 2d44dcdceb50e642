"""Requested `WxH` sizes → the aspect ratios and resolution tiers providers take instead.

Ratios are compared on a log scale, so 2:1 and 1:2 are equally far from 1:1; tiers go by pixel
count (1K ≤ 2 MP < 2K ≤ 8 MP < 4K). docs/providers.md describes the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from atelier_contracts.errors import ErrorClass
from atelier_contracts.providers import GEMINI_ASPECT_RATIOS, IMAGE_TIERS
from atelier_workers.adapters.base import ProviderError, parse_size

__all__ = [
    "GEMINI_ASPECT_RATIOS",
    "IMAGE_TIERS",
    "WIDE_ASPECT_RATIOS",
    "nearest_aspect_ratio",
    "pinned_ratio",
    "ratio_and_tier",
    "ratio_of",
    "resolution_tier",
]

# The 21:9 … 9:21 range FLUX-family endpoints take (BFL Kontext/Ultra, fal, Replicate).
WIDE_ASPECT_RATIOS = (
    "21:9",
    "16:9",
    "3:2",
    "4:3",
    "5:4",
    "1:1",
    "4:5",
    "3:4",
    "2:3",
    "9:16",
    "9:21",
)


def nearest_aspect_ratio(width: int, height: int, ratios: Iterable[str]) -> str:
    """The ratio from `ratios` ("W:H") closest to width/height."""
    target = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = ratio.split(":")
        return abs(math.log(int(w) / int(h)) - target)

    return min(ratios, key=distance)


def ratio_of(size: str, ratios: tuple[str, ...]) -> str:
    """The nearest of `ratios` to a `WxH` size."""
    width, height = parse_size(size)
    return nearest_aspect_ratio(width, height, ratios)


def resolution_tier(width: int, height: int) -> str:
    """1K, 2K or 4K by pixel count."""
    pixels = width * height
    if pixels <= 2 * 1024 * 1024:
        return "1K"
    if pixels <= 8 * 1024 * 1024:
        return "2K"
    return "4K"


def ratio_and_tier(
    size: str,
    ratios: tuple[str, ...],
    options: Mapping[str, Any],
    *,
    ratio_option: str = "aspect_ratio",
    tier_option: str = "image_size",
) -> tuple[str, str]:
    """Map a "WxH" size to (nearest ratio, nearest tier); a profile may pin either through
    the options, as long as the value is one the provider takes."""
    width, height = parse_size(size)
    ratio = pinned_ratio(options, ratios, width, height, ratio_option)
    tier = options.get(tier_option) or resolution_tier(width, height)
    if tier not in IMAGE_TIERS:
        raise ProviderError.of(
            ErrorClass.INVALID_REQUEST,
            f"option {tier_option}={tier!r} must be one of: {', '.join(IMAGE_TIERS)}",
        )
    return ratio, str(tier)


def pinned_ratio(
    options: Mapping[str, Any],
    ratios: tuple[str, ...],
    width: int,
    height: int,
    option: str = "aspect_ratio",
) -> str:
    """The ratio the profile pinned in `options[option]`, else the nearest to the size."""
    ratio = options.get(option) or nearest_aspect_ratio(width, height, ratios)
    if ratio not in ratios:
        raise ProviderError.of(
            ErrorClass.INVALID_REQUEST,
            f"option {option}={ratio!r} must be one of: {', '.join(ratios)}",
        )
    return str(ratio)
