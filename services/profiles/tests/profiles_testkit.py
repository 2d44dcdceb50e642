"""Test doubles shared by the profiles tests (importable: conftest puts this folder on the
path)."""

from __future__ import annotations


class MemoryBudgetStore:
    """Provider budgets in a dict, for apps on FastStream's in-memory broker (which has no
    key-value buckets); `down` makes every call fail as if NATS did not answer."""

    def __init__(self) -> None:
        self.budgets: dict[str, int] = {}
        self.down = False

    async def set(self, provider: str, max_concurrent: int | None) -> None:
        if self.down:
            raise ConnectionError("nats down")
        if max_concurrent is None:
            self.budgets.pop(provider, None)
        else:
            self.budgets[provider] = max_concurrent

    async def read_all(self) -> dict[str, int]:
        if self.down:
            raise ConnectionError("nats down")
        return dict(self.budgets)
