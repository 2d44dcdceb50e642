"""A provider's budget of calls at once holds across two worker replicas, and the calls go to
users in turn (issue 16, items 2 and 3; ADR 0020), on the real stack: the budget is set through
the admin API into the JetStream bucket dispatch follows; the fake OpenAI counts the calls it is
answering at once."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.e2e.jobs import wait_final

if TYPE_CHECKING:
    from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e

BUDGET = 2


def _submit(user: httpx.Client, project: str, profile_id: str, prompt: str) -> str:
    answer = user.post(
        "/v1/generations",
        json={"project": project, "profile_id": profile_id, "prompt": prompt, "count": 1},
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def _wait_for(condition: object, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_two_replicas_keep_to_the_budget_and_users_take_turns(
    running_stack: RunningStack,
) -> None:
    fake = running_stack.openai
    info = running_stack.info
    with running_stack.admin() as admin:
        created = admin.post(
            "/admin/v1/profiles",
            json={
                "name": "E2E budgeted OpenAI",
                "provider": "openai",
                "model": "gpt-image-1",
                "sizes": ["1024x1024"],
                "default_size": "1024x1024",
                "counts": [1],
                "base_url": f"{running_stack.openai_url}/v1",
            },
        )
        assert created.status_code == 201, created.text
        profile_id = str(created.json()["id"])
        budget = admin.put("/admin/v1/providers/openai/budget", json={"max_concurrent": BUDGET})
        assert budget.status_code == 200, budget.text
    seen_before = len(fake.requests)
    fake.generation_s, fake.peak_in_flight = 1.0, 0
    try:
        time.sleep(1.0)  # dispatch follows the bucket: the budget is there within a moment
        with running_stack.user() as alice, running_stack.user(info.second_user_token) as bob:
            alices = [
                _submit(alice, info.projects["user"], profile_id, f"Alice's lighthouse {i}")
                for i in range(8)
            ]
            _wait_for(lambda: len(fake.requests) > seen_before, "the first call")
            bobs = [
                _submit(bob, info.projects["second_user"], profile_id, f"Bob's harbour {i}")
                for i in range(2)
            ]
            jobs = [wait_final(alice, job_id, 120) for job_id in alices]
            jobs += [wait_final(bob, job_id, 120) for job_id in bobs]
    finally:
        fake.generation_s = 0.0
        with running_stack.admin() as admin:
            assert admin.delete("/admin/v1/providers/openai/budget").status_code == 204

    assert [job["status"] for job in jobs] == ["completed"] * 10, [j.get("error") for j in jobs]
    assert 1 <= fake.peak_in_flight <= BUDGET
    calls = [str(r.body["prompt"]) for r in fake.requests[seen_before:] if isinstance(r.body, dict)]
    assert len(calls) == 10, calls
    # Bob's first call went at the next free call after he asked, not after Alice's backlog:
    # Alice's first two were running; then Bob, Alice, Bob (give or take one turn).
    first_bob = next(i for i, prompt in enumerate(calls) if prompt.startswith("Bob"))
    last_bob = max(i for i, prompt in enumerate(calls) if prompt.startswith("Bob"))
    assert first_bob <= BUDGET + 1, calls
    assert last_bob <= BUDGET + 3, calls


def test_a_queued_job_sees_its_place_in_line_fall_to_zero(running_stack: RunningStack) -> None:
    """Issue 21, item 4: a provider budget of 1 and a slow fake make a line; the last job's
    status events and its read by id say where it stands, down to 0 as the jobs before it
    start, then nothing once its own call goes."""
    from tests.e2e.test_generation_flow import read_sse

    fake = running_stack.openai
    info = running_stack.info
    with running_stack.admin() as admin:
        created = admin.post(
            "/admin/v1/profiles",
            json={
                "name": "E2E queued OpenAI",
                "provider": "openai",
                "model": "gpt-image-1",
                "sizes": ["1024x1024"],
                "default_size": "1024x1024",
                "counts": [1],
                "base_url": f"{running_stack.openai_url}/v1",
            },
        )
        assert created.status_code == 201, created.text
        profile_id = str(created.json()["id"])
        budget = admin.put("/admin/v1/providers/openai/budget", json={"max_concurrent": 1})
        assert budget.status_code == 200, budget.text
    seen_before = len(fake.requests)
    fake.generation_s = 0.6
    try:
        time.sleep(1.0)  # dispatch follows the bucket
        with running_stack.user() as alice:
            project = info.projects["user"]
            jobs = [
                _submit(alice, project, profile_id, f"A queued lighthouse {i}") for i in range(4)
            ]
            _wait_for(lambda: len(fake.requests) > seen_before, "the first call")
            last = jobs[-1]

            def read_last() -> dict[str, Any]:
                return dict(alice.get(f"/v1/generations/{last}").json())

            _wait_for(lambda: read_last()["status"] == "generating", "the last job in line", 10)
            read = read_last()
            queue = read["progress"]["queue"]
            assert queue is not None and queue["provider"] == "openai", read
            assert 0 <= queue["position"] <= 2 and queue["user_position"] == queue["position"]
            events = read_sse(alice, f"/v1/generations/{last}/events")
            ends = [wait_final(alice, job_id, 60)["status"] for job_id in jobs]
    finally:
        fake.generation_s = 0.0
        with running_stack.admin() as admin:
            assert admin.delete("/admin/v1/providers/openai/budget").status_code == 204

    assert ends == ["completed"] * 4
    places = [e["progress"]["queue"]["position"] for e in events if e["progress"]["queue"]]
    assert places, events
    assert places == sorted(places, reverse=True), places  # only ever closer to the front
    assert places[-1] == 0, places
    # Its own call went: later events carry no position.
    after = events[[e["progress"]["queue"] is not None for e in events].index(True) :]
    assert after[-1]["status"] == "completed" and after[-1]["progress"]["queue"] is None
