"""What each provider can do, where other services need to know it (providers.md A.10).

Dispatch uses `images_per_call` to split a job into tasks; adapters honour the same numbers.
"""

from __future__ import annotations

KNOWN_PROVIDERS = ("offline", "openai")


def images_per_call(provider: str, model: str) -> int:
    """How many images one provider call may return."""
    if provider == "openai":
        return 1 if model == "dall-e-3" else 10
    # The offline provider could batch, but one image per task shows per-image progress and
    # exercises the same fan-out path that single-image providers need.
    return 1
