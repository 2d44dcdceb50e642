"""A request's inputs staged by the gateway (the claim check, ADR 0017).

The gateway writes what a request carries (data URL pictures, and the context itself when its
JSON is large) to the staging bucket through presigned PUT URLs this service hands out, and the
messages name the objects. Context owns those objects: it issues the slots, reads them back
(checking that each key is one of the request's own slots, and its size and SHA-256), and
deletes them.

- A job's inputs live under `refs/<job_id>/in/`, beside the reference images context stages for
  the job, so the job's clean-up of `refs/<job_id>/` takes them too.
- A preview's inputs live under `previews/<id>/in/` and are deleted once the preview is answered.
- What a crash leaves behind (staged inputs of a request whose publish failed, a preview context
  never answered, a clean-up that never succeeded) is removed by `sweep`, which deletes whatever
  under `refs/` and `previews/` is older than any job lives; and, whatever their age, the
  `refs/<job_id>/` objects of a cancelled job (staged after its clean-up ran).
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import ValidationError

from atelier_contracts.jobs import GenerationContext
from atelier_contracts.staging import InputSlot, InputSlotsReply, InputSlotsRequest, StagedInput
from atelier_storage import StoredObject

log = logging.getLogger("atelier.context.inputs")

_PREVIEW_PREFIX_RE = re.compile(r"^previews/[0-9a-f]{32}/in/$")


class InputStore(Protocol):
    async def presigned_put(self, bucket: str, key: str, expires_s: int = 300) -> str: ...
    async def get_bytes_if_exists(self, bucket: str, key: str) -> bytes | None: ...
    async def remove_prefix(
        self, bucket: str, prefix: str, *, older_than: datetime | None = None
    ) -> int: ...
    async def remove(self, bucket: str, key: str) -> None: ...
    def list_pages(self, bucket: str, prefix: str) -> AsyncIterator[list[StoredObject]]: ...
    async def remove_many(self, bucket: str, keys: Sequence[str]) -> int: ...


# "Was this job cancelled?" (`atelier_messaging.CancelledJobs.is_cancelled`).
CancelCheck = Callable[[str], Awaitable[bool]]


class StagedInputProblem(Exception):
    """A staged input cannot be used; `reason` is written for the writer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StagedInputMissing(StagedInputProblem):
    """The object is not (or no longer) in the staging bucket."""


def job_inputs_prefix(job_id: str) -> str:
    """Under the job's `refs/<job_id>/`, so deleting the job's references deletes these too."""
    return f"refs/{job_id}/in/"


def preview_prefix_of(staged: StagedInput) -> str | None:
    """The `previews/<id>/` a preview's input sits in; None when it is not a preview slot."""
    head, sep, _ = staged.key.rpartition("/in/")
    prefix = f"{head}{sep}"
    return f"{head}/" if sep and _PREVIEW_PREFIX_RE.match(prefix) else None


def staged_job_of(key: str) -> str | None:
    """The job a `refs/<job_id>/...` key was staged for; None for any other key."""
    parts = key.split("/", 2)
    return parts[1] if len(parts) == 3 and parts[0] == "refs" and parts[1] else None


def stale_staged_keys(
    page: Sequence[StoredObject], cutoff: datetime, cancelled_jobs: Collection[str]
) -> list[str]:
    """What the sweep deletes of a page: whatever was last written before `cutoff`, and under
    `refs/` whatever belongs to a cancelled job, however young (nothing reads it again)."""
    return [o.key for o in page if o.older_than(cutoff) or staged_job_of(o.key) in cancelled_jobs]


def _slot_index_ok(key: str, prefix: str) -> bool:
    return key.startswith(prefix) and key[len(prefix) :].isdigit()


@dataclass
class StagedInputs:
    store: InputStore
    bucket: str
    slot_ttl_s: int = 300

    async def issue_slots(self, request: InputSlotsRequest) -> InputSlotsReply:
        """Presigned PUT URLs for `count` objects: `refs/<job>/in/<n>` or, for a preview,
        `previews/<fresh id>/in/<n>`. Nothing is written yet."""
        if request.job_id is not None:
            prefix = job_inputs_prefix(request.job_id)
        else:
            prefix = f"previews/{uuid.uuid4().hex}/in/"
        slots = []
        for index in range(request.count):
            key = f"{prefix}{index}"
            url = await self.store.presigned_put(self.bucket, key, self.slot_ttl_s)
            slots.append(InputSlot(key=key, put_url=url))
        return InputSlotsReply(slots=slots, expires_s=self.slot_ttl_s)

    async def read(self, staged: StagedInput, prefix: str, *, max_bytes: int) -> bytes:
        """The object's bytes, checked: one of the slots under `prefix`, no larger than
        `max_bytes`, and exactly the size and SHA-256 the gateway declared."""
        if not _slot_index_ok(staged.key, prefix):
            # Not a slot of this request: another request's staged bytes are never read.
            raise StagedInputProblem("The picture was not staged for this request.")
        if staged.size_bytes > max_bytes:
            raise StagedInputProblem(
                f"The staged object is {staged.size_bytes:,} bytes; at most {max_bytes:,} are read."
            )
        data = await self.store.get_bytes_if_exists(self.bucket, staged.key)
        if data is None:
            raise StagedInputMissing("The picture is no longer in staging; it was not sent.")
        if len(data) != staged.size_bytes or hashlib.sha256(data).hexdigest() != staged.sha256:
            raise StagedInputProblem("The staged picture does not match what was sent.")
        return data

    async def load_context(
        self, staged: StagedInput, prefix: str, *, max_bytes: int
    ) -> GenerationContext:
        data = await self.read(staged, prefix, max_bytes=max_bytes)
        try:
            return GenerationContext.model_validate_json(data)
        except ValidationError as exc:
            raise StagedInputProblem("The staged context is not a valid context.") from exc

    async def discard(self, prefix: str) -> int:
        removed = await self.store.remove_prefix(self.bucket, prefix)
        if removed:
            log.info("staged inputs deleted", extra={"prefix": prefix, "count": removed})
        return removed

    async def discard_object(self, key: str) -> None:
        """One object (deleting one that is gone is not an error)."""
        await self.store.remove(self.bucket, key)

    async def sweep(self, max_age_s: float, is_cancelled: CancelCheck | None = None) -> int:
        """Delete what nobody reads again; how many objects went.

        - Under `refs/` and `previews/`, whatever was last written more than `max_age_s` ago: no
          job lives that long (a request that never became a job, a clean-up that kept failing).
        - Under `refs/`, however young, the objects of a job `is_cancelled` says was cancelled:
          a job cancelled while context was staging its references has them written after its
          final clean-up ran (issue 17). A cancelled job never runs again, so they are dead.

        One LIST a page of `refs/` (live jobs' references and leftovers: small) and one of
        `previews/`; one cancellation check per job with a young object there.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=max_age_s)
        removed = await self.store.remove_prefix(self.bucket, "previews/", older_than=cutoff)
        verdicts: dict[str, bool] = {}
        async for page in self.store.list_pages(self.bucket, "refs/"):
            if is_cancelled is not None:
                young = {staged_job_of(o.key) for o in page if not o.older_than(cutoff)}
                try:
                    for job_id in sorted(j for j in young if j and j not in verdicts):
                        verdicts[job_id] = await is_cancelled(job_id)
                except Exception:
                    # The marks are out of reach: the rest of this sweep goes by age alone.
                    log.warning("cancellation marks unreadable; sweeping by age", exc_info=True)
                    is_cancelled = None
            cancelled = {job_id for job_id, yes in verdicts.items() if yes}
            removed += await self.store.remove_many(
                self.bucket, stale_staged_keys(page, cutoff, cancelled)
            )
        if removed:
            log.info("stale staged objects deleted", extra={"count": removed})
        return removed
