"""Admission (ADR 0020): a provider with a budget gets at most that many tasks at once, from
dispatch, one user at a time; on a real database, two dispatch replicas included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from atelier_contracts.envelope import Event
from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.generation import GenerationFailed, GenerationTask
from atelier_contracts.jobs import (
    JobRequested,
    JobStatus,
    JobStatusChanged,
)
from atelier_contracts.testing import job_enriched, job_requested, media_landed, profile_snapshot
from atelier_database import Database
from atelier_dispatch.admission import allot, line_positions, turn_order
from atelier_dispatch.repository import TABLES
from atelier_dispatch.service import DispatchService

T0 = datetime(2026, 12, 7, tzinfo=UTC)


def test_the_user_served_longest_ago_goes_first_and_a_new_one_before_all() -> None:
    waiting = {"alice": 500, "bob": 2, "carol": 1}
    turns = {"alice": T0 + timedelta(seconds=5), "bob": T0}
    assert turn_order(waiting, turns) == ["carol", "bob", "alice"]


def test_calls_are_dealt_one_per_user_per_round() -> None:
    order = ["carol", "bob", "alice"]
    waiting = {"alice": 500, "bob": 2, "carol": 1}
    assert allot(order, waiting, 1) == {"carol": 1}
    assert allot(order, waiting, 3) == {"carol": 1, "bob": 1, "alice": 1}
    # carol has no more, bob two: the rest goes to whoever still waits.
    assert allot(order, waiting, 6) == {"carol": 1, "bob": 2, "alice": 3}
    assert allot(order, {"alice": 2}, 10) == {"alice": 2}
    assert allot(order, waiting, 0) == {}


def test_the_line_is_the_round_robin_admission_deals() -> None:
    """Issue 21: alice has three jobs waiting, bob two, carol (never served) one; alice was
    served last. Admission deals carol, bob, alice, bob, alice, alice."""
    line = [("alice", "a1"), ("bob", "b1"), ("alice", "a2"), ("carol", "c1")]
    line += [("alice", "a3"), ("bob", "b2")]
    turns = {"alice": T0 + timedelta(seconds=5), "bob": T0}
    assert line_positions(line, turns) == {
        "c1": (0, 0),
        "b1": (1, 0),
        "a1": (2, 0),
        "b2": (3, 1),
        "a2": (4, 1),
        "a3": (5, 2),
    }
    # A job of several tasks stands where its first waiting one does.
    assert line_positions([("bob", "b"), ("bob", "b"), ("ann", "x")], {}) == {
        "x": (0, 0),
        "b": (1, 0),
    }
    assert line_positions([], {}) == {}


class Sent:
    def __init__(self) -> None:
        self.events: list[tuple[Event, str]] = []

    async def __call__(self, event: Event, subject: str) -> None:
        self.events.append((event, subject))

    def tasks(self) -> list[GenerationTask]:
        return [e for e, _ in self.events if isinstance(e, GenerationTask)]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.create_tables(TABLES)
    yield database
    await database.dispose()


def _request(user: str, count: int = 1) -> JobRequested:
    slow = profile_snapshot(name="Slow", provider="falai", model="fal-ai/flux/dev")
    return job_requested(user_id=user, profile=slow, prompt=f"A lighthouse for {user}", count=count)


async def _submit(service: DispatchService, user: str, count: int = 1) -> str:
    request = _request(user, count)
    await service.record_request(request)
    await service.dispatch_enriched(job_enriched(request))
    return request.job_id


def _users(tasks: list[GenerationTask]) -> list[str]:
    return [t.user_id for t in tasks]


async def test_a_budget_holds_calls_and_a_freed_one_goes_to_the_next_user(db: Database) -> None:
    sent = Sent()
    service = DispatchService(db, sent, budgets={"falai": 2})
    for _ in range(5):
        await _submit(service, "alice")
    assert _users(sent.tasks()) == ["alice", "alice"]  # the budget: two calls at once

    await _submit(service, "bob")
    assert len(sent.tasks()) == 2  # bob waits too: no call is free

    first, second = sent.tasks()
    await service.images_landed(media_landed(first))
    # Alice has three waiting, bob one: the free call is bob's, served never before.
    assert _users(sent.tasks()) == ["alice", "alice", "bob"]
    await service.images_landed(media_landed(second))
    assert _users(sent.tasks()) == ["alice", "alice", "bob", "alice"]


async def test_a_users_backlog_delays_another_users_tasks_by_one_turn_at_most(
    db: Database,
) -> None:
    sent = Sent()
    service = DispatchService(db, sent, budgets={"falai": 1})
    for _ in range(20):
        await _submit(service, "alice")
    for _ in range(3):
        await _submit(service, "bob")
    # Each landed image frees the one call; whose task goes next alternates.
    for _ in range(7):
        await service.images_landed(media_landed(sent.tasks()[-1]))
    assert _users(sent.tasks()) == [
        "alice",
        "bob",
        "alice",
        "bob",
        "alice",
        "bob",
        "alice",
        "alice",
    ]


async def test_a_retry_or_a_cancel_frees_the_call(db: Database) -> None:
    sent = Sent()
    service = DispatchService(db, sent, budgets={"falai": 1}, retry_base_s=0.01)
    first_job = await _submit(service, "alice")
    await _submit(service, "bob")
    third_job = await _submit(service, "carol")
    [running] = sent.tasks()

    # A retryable failure: waiting for its retry, it holds no call; bob's task runs.
    await service.task_failed(
        GenerationFailed(task=running, error=ErrorInfo.of(ErrorClass.PROVIDER_UNAVAILABLE))
    )
    assert _users(sent.tasks()) == ["alice", "bob"]

    # Carol cancels while waiting: her task never goes out. Bob's call ends with a cancel too.
    await service.cancel(third_job)
    await service.cancel(sent.tasks()[-1].job_id)
    # The call is free, and alice's retry is due: it waits its turn, and gets it.
    await asyncio.sleep(0.05)
    await service.send_due_retries()
    tasks = sent.tasks()
    assert _users(tasks) == ["alice", "bob", "alice"]
    assert tasks[-1].job_id == first_job and tasks[-1].attempt == 2


async def test_a_budget_raised_or_removed_lets_waiting_tasks_go(db: Database) -> None:
    sent = Sent()
    budgets = {"falai": 1}
    service = DispatchService(db, sent, budgets=budgets)
    for _ in range(4):
        await _submit(service, "alice")
    assert len(sent.tasks()) == 1
    budgets["falai"] = 3
    assert await service.admit_waiting("falai") == 2
    assert len(sent.tasks()) == 3
    del budgets["falai"]
    assert await service.admit_waiting() == 1  # the sweeper: every provider with waiting tasks
    assert len(sent.tasks()) == 4
    assert await service.admit_waiting() == 0


async def test_without_a_budget_tasks_go_at_once(db: Database) -> None:
    sent = Sent()
    service = DispatchService(db, sent)
    job_id = await _submit(service, "alice", count=4)
    assert len(sent.tasks()) == 4
    job = await service.get_job(job_id)
    assert job is not None and job.status == JobStatus.GENERATING


async def test_two_dispatch_replicas_never_exceed_the_budget_together(db: Database) -> None:
    """Two services on one database, submitting and landing at the same time (threads on
    PostgreSQL): the provider row lock makes their admissions take turns."""
    budget = 3
    sent = Sent()
    replicas = [DispatchService(db, sent, budgets={"falai": budget}) for _ in range(2)]
    await asyncio.gather(
        *(_submit(replicas[i % 2], f"user-{i % 4}") for i in range(24)),
    )
    assert len(sent.tasks()) == budget
    landed: set[str] = set()
    for round_ in range(30):
        running = [t for t in sent.tasks() if t.task_id not in landed]
        assert len(running) <= budget
        if not running:
            break
        landed.update(t.task_id for t in running)
        await asyncio.gather(
            *(
                replicas[(round_ + k) % 2].images_landed(media_landed(t))
                for k, t in enumerate(running)
            )
        )
    assert len(sent.tasks()) == 24
    assert len({t.task_id for t in sent.tasks()}) == 24  # none handed over twice


async def test_a_waiting_job_hears_its_place_in_line_until_it_is_next(db: Database) -> None:
    """Issue 21: with a budget of one, each job behind the running one is told where it stands,
    on its status events and when read by id, down to 0; once its task goes, no position."""
    sent = Sent()
    service = DispatchService(db, sent, budgets={"falai": 1})
    first = await _submit(service, "alice")
    second = await _submit(service, "alice")
    third = await _submit(service, "bob")

    def places(job_id: str) -> list[int | None]:
        return [
            e.job.progress.queue.position if e.job.progress.queue else None
            for e, _ in sent.events
            if isinstance(e, JobStatusChanged) and e.job.id == job_id
        ]

    assert places(first) == [None]  # went at once
    # Bob, never served, goes before alice's second job, which hears it moved back.
    assert places(second) == [0, 1]
    assert places(third) == [0]
    view = await service.get_job(second)
    assert view is not None and view.progress.queue is not None
    assert (view.progress.queue.position, view.progress.queue.user_position) == (1, 0)

    [task] = sent.tasks()
    await service.images_landed(media_landed(task))
    # Bob's task went; alice's second job is next and hears so.
    assert _users(sent.tasks()) == ["alice", "bob"]
    assert places(second) == [0, 1, 0]
    view = await service.get_job(third)
    assert view is not None and view.progress.queue is None
    await service.images_landed(media_landed(sent.tasks()[-1]))
    view = await service.get_job(second)
    assert view is not None and view.progress.queue is None
