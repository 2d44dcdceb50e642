"""Removing what nobody will land or store: unlanded results and abandoned uploads (issue 17).

A worker writes each generated image to the media bucket (`generated/<job_id>/<task_id>/
<index>-<sha256[:16]>.<ext>`) before media hears of it. Some of those objects never land:

- the worker died, or its publish of `gen.completed` failed, after the PUT: the retry asks the
  provider again, and other bytes are another key;
- the job was cancelled while the worker was writing: it reports the task cancelled, not the
  images;
- media refused the bytes (not an image, not the reported hash) until the message ran out of
  deliveries;
- a best-effort delete of a late result of a cancelled job, or of a task's second result, failed.

No `media_items` row names any of them: media owns those rows, so media sweeps. Every
`sweep_interval_s` the objects under `generated/` last written more than `max_age_s` ago are
listed a page at a time, the rows of their jobs read in one query a page (`job_id` is indexed),
and those no row names are deleted. The age is the safety: a result is landed within minutes of
its PUT (its redeliveries take ~10 minutes at most) and no job lives longer than ~15.5 hours,
so at the default 24 h an object without a row never gets one.

The staging bucket's `uploads/<project>/<id>` (a project file's bytes, PUT by the gateway just
before `media.command.store_file`) is deleted once stored or refused; one whose command never
came (the gateway died between the two) is deleted once older than `max_age_s`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from atelier_storage import StoredObject

log = logging.getLogger("atelier.media.sweep")

GENERATED_PREFIX = "generated/"
UPLOADS_PREFIX = "uploads/"


class LandedKeys(Protocol):
    async def original_keys_of_jobs(self, job_ids: Collection[str]) -> set[str]: ...


class SweptStore(Protocol):
    def list_pages(self, bucket: str, prefix: str) -> AsyncIterator[list[StoredObject]]: ...
    async def remove_many(self, bucket: str, keys: Sequence[str]) -> int: ...
    async def remove_prefix(
        self, bucket: str, prefix: str, *, older_than: datetime | None = None
    ) -> int: ...


def generated_job_of(key: str) -> str | None:
    """The job of a `generated/<job_id>/<task_id>/<name>` key; None for any other shape (left
    alone: not something a worker wrote)."""
    parts = key.split("/")
    if len(parts) == 4 and parts[0] == "generated" and all(parts[1:]):
        return parts[1]
    return None


def unlanded_keys(
    page: Sequence[StoredObject], cutoff: datetime, landed: Collection[str]
) -> list[str]:
    """What the sweep deletes of a page: a worker's object last written before `cutoff` that no
    row names."""
    return [
        o.key
        for o in page
        if o.older_than(cutoff) and generated_job_of(o.key) is not None and o.key not in landed
    ]


@dataclass(frozen=True)
class Swept:
    generated: int
    uploads: int


@dataclass
class UnlandedSweeper:
    repo: LandedKeys
    store: SweptStore
    media_bucket: str
    staging_bucket: str

    async def sweep(self, max_age_s: float) -> Swept:
        """Delete the unlanded generated images and the abandoned uploads older than
        `max_age_s`; how many of each went. Idempotent; every replica may run it."""
        cutoff = datetime.now(UTC) - timedelta(seconds=max_age_s)
        generated = 0
        async for page in self.store.list_pages(self.media_bucket, GENERATED_PREFIX):
            old = [o for o in page if o.older_than(cutoff)]
            jobs = {job for o in old if (job := generated_job_of(o.key)) is not None}
            if not jobs:
                continue
            landed = await self.repo.original_keys_of_jobs(jobs)
            doomed = unlanded_keys(old, cutoff, landed)
            if doomed:
                generated += await self.store.remove_many(self.media_bucket, doomed)
                log.info(
                    "unlanded generated images deleted",
                    extra={"count": len(doomed), "jobs": sorted({k.split("/")[1] for k in doomed})},
                )
        uploads = await self.store.remove_prefix(
            self.staging_bucket, UPLOADS_PREFIX, older_than=cutoff
        )
        if uploads:
            log.info("abandoned uploads deleted", extra={"count": uploads})
        return Swept(generated=generated, uploads=uploads)
