"""Provider budgets: how many calls a provider may run at once across every worker replica
(providers limit accounts, not processes). Admins set them through the admin API (`api.py`);
they live in a JetStream key-value bucket that dispatch follows and admits tasks within
(ADR 0020).

No budget: dispatch hands every task to the provider's queue at once, as before.
"""

from __future__ import annotations

import logging
from typing import Annotated, Protocol

from pydantic import BaseModel, Field

from atelier_contracts.errors import NotFound
from atelier_contracts.providers import KNOWN_PROVIDERS
from atelier_profiles.ports import unavailable_on_failure

log = logging.getLogger("atelier.profiles.budgets")

MAX_BUDGET = 10_000


class BudgetStore(Protocol):
    """Where budgets live (`atelier_messaging.ProviderBudgets`; a dict in tests)."""

    async def set(self, provider: str, max_concurrent: int | None) -> None: ...

    async def read_all(self) -> dict[str, int]: ...


class ProviderBudget(BaseModel):
    provider: str = Field(examples=["openai"])
    max_concurrent: int | None = Field(
        description="Calls at once across every worker replica; null: no limit",
        examples=[50],
    )


class BudgetInput(BaseModel):
    max_concurrent: Annotated[int, Field(ge=1, le=MAX_BUDGET)] | None = Field(
        description=f"1 to {MAX_BUDGET:,} calls at once across every worker; null removes the "
        "limit",
        examples=[50],
    )


class BudgetService:
    def __init__(self, store: BudgetStore) -> None:
        self._store = store

    async def _all(self) -> dict[str, int]:
        with unavailable_on_failure(
            log,
            "provider budgets could not be read",
            "The provider budgets (kept in NATS) cannot be read right now; try again.",
        ):
            return await self._store.read_all()

    async def list(self) -> list[ProviderBudget]:
        budgets = await self._all()
        names = sorted(set(KNOWN_PROVIDERS) | set(budgets))
        return [ProviderBudget(provider=name, max_concurrent=budgets.get(name)) for name in names]

    async def get(self, provider: str) -> ProviderBudget:
        _require_known(provider)
        return ProviderBudget(provider=provider, max_concurrent=(await self._all()).get(provider))

    async def set(self, provider: str, budget: BudgetInput) -> ProviderBudget:
        _require_known(provider)
        with unavailable_on_failure(
            log,
            "a provider budget could not be stored",
            "The provider budget could not be stored (NATS does not answer); nothing changed. "
            "Try again.",
            provider=provider,
        ):
            await self._store.set(provider, budget.max_concurrent)
        log.info(
            "provider budget set",
            extra={"provider": provider, "max_concurrent": budget.max_concurrent},
        )
        return ProviderBudget(provider=provider, max_concurrent=budget.max_concurrent)


def _require_known(provider: str) -> None:
    if provider not in KNOWN_PROVIDERS:
        raise NotFound(f"There is no provider {provider!r}; known: {', '.join(KNOWN_PROVIDERS)}.")
