"""The sweep of the staging bucket (issue 17): what it deletes, what it must never delete.

Unit tests: an in-memory store whose objects carry the times the test gives them, and a
cancellation check that records what it was asked. test_staged_inputs.py runs the same sweep on
a real SeaweedFS; tests/reliability/test_nothing_left_behind.py on the real stack.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from atelier_context.inputs import StagedInputs, staged_job_of, stale_staged_keys
from atelier_storage import StoredObject

BUCKET = "staging"
NOW = datetime.now(UTC)
HOUR = timedelta(hours=1)
DAY_S = 24 * 3600.0


@dataclass
class MemoryStore:
    """Objects by key with their last-written time; lists in pages of `page_size`."""

    objects: dict[str, datetime] = field(default_factory=dict)
    page_size: int = 2
    lists: int = 0

    def put(self, key: str, age: timedelta = timedelta(0)) -> None:
        self.objects[key] = NOW - age

    async def list_pages(self, bucket: str, prefix: str) -> AsyncIterator[list[StoredObject]]:
        assert bucket == BUCKET and prefix
        self.lists += 1
        listed = sorted(k for k in self.objects if k.startswith(prefix))
        for start in range(0, len(listed), self.page_size):
            yield [StoredObject(k, self.objects[k]) for k in listed[start : start + self.page_size]]

    async def remove_many(self, bucket: str, keys: Sequence[str]) -> int:
        for key in keys:
            self.objects.pop(key, None)
        return len(keys)

    async def remove_prefix(
        self, bucket: str, prefix: str, *, older_than: datetime | None = None
    ) -> int:
        doomed = [
            k
            for k, at in self.objects.items()
            if k.startswith(prefix) and (older_than is None or at < older_than)
        ]
        return await self.remove_many(bucket, doomed)

    # Not used by the sweep.
    async def presigned_put(self, bucket: str, key: str, expires_s: int = 300) -> str:
        raise NotImplementedError

    async def get_bytes_if_exists(self, bucket: str, key: str) -> bytes | None:
        raise NotImplementedError

    async def remove(self, bucket: str, key: str) -> None:
        self.objects.pop(key, None)


@dataclass
class Marks:
    """The cancellation marks; `asked` records every job it was asked about."""

    cancelled: set[str] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)
    broken: bool = False

    async def __call__(self, job_id: str) -> bool:
        self.asked.append(job_id)
        if self.broken:
            raise TimeoutError("nats: timeout")
        return job_id in self.cancelled


def test_staged_job_of_names_the_job_of_a_refs_key_only() -> None:
    assert staged_job_of("refs/job-a/0.png") == "job-a"
    assert staged_job_of("refs/job-a/in/0") == "job-a"
    assert staged_job_of("refs/job-a") is None  # not under a job's prefix
    assert staged_job_of("refs//0.png") is None
    assert staged_job_of("previews/" + "a" * 32 + "/in/0") is None
    assert staged_job_of("uploads/p/x") is None


def test_stale_keys_are_the_old_ones_and_those_of_cancelled_jobs() -> None:
    cutoff = NOW - 24 * HOUR
    page = [
        StoredObject("refs/live/0.png", NOW - HOUR),
        StoredObject("refs/live/in/0", NOW - 25 * HOUR),  # older than any job lives
        StoredObject("refs/gone/0.png", NOW),  # cancelled: dead however young
        StoredObject("refs/gone-not/0.png", NOW),  # a longer id with the same start
        StoredObject("refs/undated/0.png", None),  # no time: never taken for old
    ]
    assert stale_staged_keys(page, cutoff, {"gone"}) == ["refs/live/in/0", "refs/gone/0.png"]
    assert stale_staged_keys(page, cutoff, set()) == ["refs/live/in/0"]


async def test_a_cancelled_jobs_references_go_at_once_and_a_live_jobs_stay() -> None:
    store = MemoryStore()
    # Staged after the job's final clean-up ran: the job was cancelled while context worked.
    store.put("refs/cancelled/0.png")
    store.put("refs/cancelled/1.jpg")
    store.put("refs/cancelled/in/0", age=HOUR)
    # A job still generating: its worker reads these.
    store.put("refs/running/0.png", age=2 * HOUR)
    store.put("refs/running/in/0", age=2 * HOUR)
    marks = Marks(cancelled={"cancelled"})

    removed = await StagedInputs(store, BUCKET).sweep(DAY_S, marks)

    assert removed == 3
    assert sorted(store.objects) == ["refs/running/0.png", "refs/running/in/0"]
    assert sorted(marks.asked) == ["cancelled", "running"]  # once a job, across pages


async def test_age_alone_takes_what_no_job_needs_any_more() -> None:
    store = MemoryStore()
    # The gateway staged inputs, then publishing jobs.requested failed: never a job.
    store.put("refs/never-a-job/in/0", age=25 * HOUR)
    # A final job's clean-up failed 20 times.
    store.put("refs/finished/0.png", age=30 * HOUR)
    # A preview never answered (context died), and one just asked.
    store.put("previews/" + "a" * 32 + "/in/0", age=25 * HOUR)
    store.put("previews/" + "b" * 32 + "/in/0", age=HOUR)
    # Media's, not context's: never touched here.
    store.put("uploads/proj/" + "c" * 32, age=48 * HOUR)
    marks = Marks()

    removed = await StagedInputs(store, BUCKET).sweep(DAY_S, marks)

    assert removed == 3
    assert sorted(store.objects) == ["previews/" + "b" * 32 + "/in/0", "uploads/proj/" + "c" * 32]
    assert marks.asked == []  # old objects go whatever the job: no need to ask


async def test_without_the_marks_the_sweep_goes_by_age() -> None:
    store = MemoryStore()
    store.put("refs/a/0.png")
    store.put("refs/b/0.png")
    store.put("refs/c/0.png", age=25 * HOUR)
    marks = Marks(cancelled={"a", "b"}, broken=True)

    assert await StagedInputs(store, BUCKET).sweep(DAY_S, marks) == 1
    assert sorted(store.objects) == ["refs/a/0.png", "refs/b/0.png"]
    assert marks.asked == ["a"]  # one failure: not asked again in this sweep

    # No check given at all (a caller without marks): age only, as before.
    assert await StagedInputs(store, BUCKET).sweep(DAY_S) == 0


@pytest.mark.parametrize("page_size", [1, 2, 1000])
async def test_every_page_is_swept(page_size: int) -> None:
    store = MemoryStore(page_size=page_size)
    for n in range(7):
        store.put(f"refs/job-{n}/0.png", age=25 * HOUR if n % 2 else timedelta(0))
    assert await StagedInputs(store, BUCKET).sweep(DAY_S, Marks(cancelled={"job-0"})) == 4
    assert sorted(store.objects) == ["refs/job-2/0.png", "refs/job-4/0.png", "refs/job-6/0.png"]
