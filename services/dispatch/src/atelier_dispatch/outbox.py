"""What one job transaction has to say, held until it commits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from atelier_contracts.envelope import Event
from atelier_dispatch.repository import JobRepository

Publish = Callable[[Event, str], Awaitable[None]]


@dataclass
class Outbox:
    """Events to publish once the transaction committed."""

    events: list[tuple[Event, str]] = field(default_factory=list)

    def add(self, event: Event, subject: str) -> None:
        self.events.append((event, subject))


class Rules(Protocol):
    """The service's settings a transaction reads (`DispatchService` has them): read at each
    transaction, so a budget change or a new limit counts from the next one."""

    @property
    def budgets(self) -> Mapping[str, int]: ...

    @property
    def deadline_slack_s(self) -> float: ...

    @property
    def max_attempts(self) -> int: ...

    @property
    def retry_base_s(self) -> float: ...


@dataclass
class Txn:
    """One job transaction: the service's rules, the repository on its session, and what it
    will publish once it commits. Budgets are read from the rules where they are used, so a
    change counts from the next transaction."""

    rules: Rules
    repo: JobRepository
    outbox: Outbox = field(default_factory=Outbox)

    @property
    def budgets(self) -> Mapping[str, int]:
        return self.rules.budgets
