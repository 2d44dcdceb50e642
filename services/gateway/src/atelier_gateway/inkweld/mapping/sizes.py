"""Sizes: the app's aspect ratios and `auto` as a profile's pixel sizes, and back."""

from __future__ import annotations

import re

from atelier_contracts.errors import InvalidInput
from atelier_contracts.profiles import SIZE_PATTERN, Profile

# The app's aspect-ratio presets and the pixel size each stands for (its own size list pairs
# them: `16:9` is `1344x768`). A profile stores pixel sizes only.
ASPECT_RATIO_SIZES: dict[str, str] = {
    "1:1": "1024x1024",
    "2:3": "832x1248",
    "3:2": "1248x832",
    "3:4": "864x1184",
    "4:3": "1184x864",
    "4:5": "896x1152",
    "5:4": "1152x896",
    "9:16": "768x1344",
    "16:9": "1344x768",
    "21:9": "1536x672",
}
_RATIO_OF_SIZE = {size: ratio for ratio, size in ASPECT_RATIO_SIZES.items()}
AUTO_SIZE = "auto"
_SIZE_RE = re.compile(SIZE_PATTERN)
_PAIR_RE = re.compile(r"^([1-9][0-9]*)[:x]([1-9][0-9]*)$")
# The presets themselves are only near their names (1344x768 is 1.75, 16:9 is 1.78).
_RATIO_TOLERANCE = 0.05


def _proportion(value: str) -> float | None:
    """Width over height of `W:H` or `WxH`."""
    match = _PAIR_RE.match(value)
    return int(match.group(1)) / int(match.group(2)) if match else None


def profile_size(value: str) -> str | None:
    """An app size as a profile size: `WxH` as it is, a ratio as its preset, `auto` as None."""
    size = value.strip().lower()
    if size == AUTO_SIZE:
        return None
    if size in ASPECT_RATIO_SIZES:
        return ASPECT_RATIO_SIZES[size]
    if _SIZE_RE.match(size):
        return size
    raise InvalidInput(
        f"{value!r} is not a size: use WIDTHxHEIGHT (1024x1024), an aspect ratio "
        f"({', '.join(ASPECT_RATIO_SIZES)}) or auto."
    )


def requested_size(value: str | None, profile: Profile | None) -> str | None:
    """The size a generation asks for: None (the profile's default) for `auto`; for a ratio, the
    profile's size nearest to it (within 5%), else the ratio's preset, which the profile's own
    check may then refuse, listing what it makes."""
    if value is None or value == AUTO_SIZE:
        return None
    if value not in ASPECT_RATIO_SIZES:
        return value
    wanted = _proportion(value)
    assert wanted is not None
    if profile is not None:
        nearest = min(
            ((abs((_proportion(s) or 0) / wanted - 1), i, s) for i, s in enumerate(profile.sizes)),
            default=None,
        )
        if nearest is not None and nearest[0] <= _RATIO_TOLERANCE:
            return nearest[2]
    return ASPECT_RATIO_SIZES[value]


def inkweld_size(size: str, aspect_ratio_only: bool) -> str:
    """A profile size as the app shows it: its ratio for aspect-ratio-only profiles."""
    return _RATIO_OF_SIZE.get(size, size) if aspect_ratio_only else size
