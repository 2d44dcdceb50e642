"""Credits as the database keeps them: integer milli-credits.

Sums and "does it still fit" comparisons must be exact, which floats are not (0.1 + 0.2 > 0.3).
"""

from __future__ import annotations

MILLI = 1000


def to_milli(credits: float) -> int:
    return round(credits * MILLI)


def from_milli(milli: int) -> float:
    return milli / MILLI


def to_milli_or_none(credits: float | None) -> int | None:
    """None stays None: no limit."""
    return None if credits is None else to_milli(credits)


def from_milli_or_none(milli: int | None) -> float | None:
    return None if milli is None else from_milli(milli)
