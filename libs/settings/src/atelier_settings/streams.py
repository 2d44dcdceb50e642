"""How much each JetStream stream may hold, and what it does once full.

Read by `atelier_messaging.ensure_streams` from `ATELIER_STREAM_<STREAM>_MAX_BYTES` and
`ATELIER_STREAM_<STREAM>_DISCARD` (the stream's name without `ATELIER_`). Without limits one user's
large requests filled the server's whole JetStream store and every stream stopped with it (issue
15); with them a stream fills alone and says so.

The defaults add up to 2.3 GiB and fit a small server (docker-compose gives JetStream 10 GB, the
Kubernetes overlay 8 GB per node, `make run` 4 GB). JetStream reserves each stream's `max_bytes`
from the server's `max_file_store` when the stream is created, so the sum must fit in it.

`new` refuses a publish once the stream is full (the publisher gets `StreamFull`): for streams
whose publisher can be told no (`jobs.requested`: the gateway answers the user) and for the work
queue, whose pending tasks must not be dropped. `old` drops the oldest messages instead: for
event streams whose oldest messages have long been handled.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024
GiB = 1024 * MiB

Discard = Literal["new", "old"]


class StreamLimits(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_STREAM_", extra="ignore", env_file=".env")

    jobs_max_bytes: int = Field(
        default=1 * GiB,
        ge=-1,
        description="Most bytes `ATELIER_JOBS` keeps: the jobs context and dispatch have not "
        "handled yet, requests with their pictures (interest retention); -1: no limit",
    )
    jobs_discard: Discard = Field(
        default="new",
        description="When `ATELIER_JOBS` is full: `new` refuses new jobs (503 "
        "`stream_full`), `old` drops the oldest, unhandled as they are",
    )
    tasks_max_bytes: int = Field(
        default=512 * MiB,
        ge=-1,
        description="Most bytes `ATELIER_TASKS` keeps (provider tasks "
        "waiting for a worker); -1: no limit",
    )
    tasks_discard: Discard = Field(default="new", description="When `ATELIER_TASKS` is full")
    results_max_bytes: int = Field(
        default=256 * MiB,
        ge=-1,
        description="Most bytes `ATELIER_RESULTS` keeps (started, "
        "progress, completed, failed); -1: no limit",
    )
    results_discard: Discard = Field(default="old", description="When `ATELIER_RESULTS` is full")
    media_max_bytes: int = Field(
        default=128 * MiB,
        ge=-1,
        description="Most bytes `ATELIER_MEDIA` keeps (landed and "
        "assigned images' events); -1: no limit",
    )
    media_discard: Discard = Field(default="old", description="When `ATELIER_MEDIA` is full")
    status_max_bytes: int = Field(
        default=384 * MiB,
        ge=-1,
        description="Most bytes `ATELIER_STATUS` keeps (jobs' updates and outcomes, which "
        "settle credits; 7 days); -1: no limit",
    )
    status_discard: Discard = Field(default="old", description="When `ATELIER_STATUS` is full")
    profiles_max_bytes: int = Field(
        default=64 * MiB,
        ge=-1,
        description="Most bytes `ATELIER_PROFILES` keeps (profile changes); -1: no limit",
    )
    profiles_discard: Discard = Field(default="old", description="When `ATELIER_PROFILES` is full")
    webhooks_max_bytes: int = Field(
        default=256 * MiB,
        ge=-1,
        description="Most bytes `ATELIER_WEBHOOKS` keeps (webhook deliveries, each retried for "
        "a day; ADR 0025); -1: no limit",
    )
    webhooks_discard: Discard = Field(
        default="new",
        description="When `ATELIER_WEBHOOKS` is full: `new` refuses new deliveries (the outcome "
        "that makes them is redelivered until there is room), `old` drops the oldest",
    )

    def for_stream(self, stream: str) -> tuple[int, Discard]:
        """`(max_bytes, discard)` of a stream by its name (`ATELIER_JOBS` → `jobs_*`)."""
        key = stream.removeprefix("ATELIER_").lower()
        max_bytes: int = getattr(self, f"{key}_max_bytes")
        discard: Discard = getattr(self, f"{key}_discard")
        return max_bytes, discard

    @staticmethod
    def env_of(stream: str) -> str:
        """The variable that sets a stream's byte limit, for error messages."""
        return f"ATELIER_STREAM_{stream.removeprefix('ATELIER_')}_MAX_BYTES"
