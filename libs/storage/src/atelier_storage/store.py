"""A small async face over the (synchronous) MinIO SDK.

The SDK blocks, so each call runs in a worker thread; the SDK's urllib3 pool is thread-safe.
"""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from prometheus_client import Counter

from atelier_settings import BaseServiceSettings

S3_REQUESTS = Counter(
    "atelier_s3_requests",
    "Requests this process made to object storage, by kind (PUT, GET, HEAD, DELETE, LIST, "
    "DELETE_MANY); presigned URLs handed out are not requests",
    ["kind"],
)

# What S3 servers answer for an absent key (MinIO, SeaweedFS and AWS differ on HEAD and GET).
_MISSING_OBJECT_CODES = ("NoSuchKey", "NoSuchObject", "NotFound")


class DeleteFailed(Exception):
    """Object storage refused to delete some of the objects asked for."""


@dataclass(frozen=True)
class StoredObject:
    """An object as a listing names it: its key and when it was last written."""

    key: str
    last_modified: datetime | None  # every server we use reports it; None is never "old"

    def older_than(self, cutoff: datetime) -> bool:
        return self.last_modified is not None and self.last_modified < cutoff


# One LIST answers at most this many keys (S3's max-keys): a page of ours is one request.
LIST_PAGE = 1000


class ObjectStore:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        *,
        secure: bool = False,
        region: str = "us-east-1",
    ) -> None:
        self.client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region
        )

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> ObjectStore:
        return cls(
            settings.s3_endpoint,
            settings.s3_access_key,
            settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
        )

    async def ensure_bucket(self, bucket: str) -> None:
        def make() -> None:
            S3_REQUESTS.labels(kind="HEAD").inc()
            if not self.client.bucket_exists(bucket):
                S3_REQUESTS.labels(kind="PUT").inc()
                try:
                    self.client.make_bucket(bucket)
                except S3Error as exc:  # another process made it first
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

        await asyncio.to_thread(make)

    async def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        S3_REQUESTS.labels(kind="PUT").inc()
        await asyncio.to_thread(
            self.client.put_object,
            bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
            metadata=metadata,  # type: ignore[arg-type]
        )

    def _read(self, bucket: str, key: str) -> bytes:
        S3_REQUESTS.labels(kind="GET").inc()
        response = self.client.get_object(bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        return await asyncio.to_thread(self._read, bucket, key)

    async def get_bytes_if_exists(self, bucket: str, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such object: one request, no stat first."""

        def get() -> bytes | None:
            try:
                return self._read(bucket, key)
            except S3Error as exc:
                if exc.code in _MISSING_OBJECT_CODES:
                    return None
                raise

        return await asyncio.to_thread(get)

    async def exists(self, bucket: str, key: str) -> bool:
        def stat() -> bool:
            S3_REQUESTS.labels(kind="HEAD").inc()
            try:
                self.client.stat_object(bucket, key)
                return True
            except S3Error as exc:
                if exc.code in _MISSING_OBJECT_CODES:
                    return False
                raise

        return await asyncio.to_thread(stat)

    async def size_if_exists(self, bucket: str, key: str) -> int | None:
        """The object's size in bytes, or None when there is no such object (one HEAD)."""

        def stat() -> int | None:
            S3_REQUESTS.labels(kind="HEAD").inc()
            try:
                return self.client.stat_object(bucket, key).size
            except S3Error as exc:
                if exc.code in _MISSING_OBJECT_CODES:
                    return None
                raise

        return await asyncio.to_thread(stat)

    async def remove(self, bucket: str, key: str) -> None:
        S3_REQUESTS.labels(kind="DELETE").inc()
        await asyncio.to_thread(self.client.remove_object, bucket, key)

    async def remove_prefix(
        self, bucket: str, prefix: str, *, older_than: datetime | None = None
    ) -> int:
        """Delete every object whose key starts with `prefix` (and, given `older_than`, that was
        last written before it); how many there were.

        Idempotent: nothing under the prefix is not an error. Raises if any delete failed.
        """
        if not prefix:
            raise ValueError("an empty prefix would delete the whole bucket")

        def remove_all() -> int:
            S3_REQUESTS.labels(kind="LIST").inc()
            keys = [
                o.object_name
                for o in self.client.list_objects(bucket, prefix=prefix, recursive=True)
                if o.object_name
                and (
                    older_than is None
                    or (o.last_modified is not None and o.last_modified < older_than)
                )
            ]
            return self._remove_keys(bucket, keys, f"under {prefix!r}")

        return await asyncio.to_thread(remove_all)

    async def list_pages(
        self, bucket: str, prefix: str, page_size: int = LIST_PAGE
    ) -> AsyncIterator[list[StoredObject]]:
        """Every object under `prefix`, a page at a time (a page is what one LIST answers), so
        a sweep over a large bucket never holds more than a page of keys."""
        if not prefix:
            raise ValueError("a sweep of the whole bucket is never meant")
        listing = iter(self.client.list_objects(bucket, prefix=prefix, recursive=True))
        pages = 0

        def next_page() -> list[StoredObject] | None:
            nonlocal pages
            batch = list(itertools.islice(listing, page_size))
            if batch or pages == 0:  # an empty listing is a request too
                S3_REQUESTS.labels(kind="LIST").inc()
            pages += 1
            if not batch:
                return None
            return [StoredObject(o.object_name, o.last_modified) for o in batch if o.object_name]

        while (page := await asyncio.to_thread(next_page)) is not None:
            yield page

    async def remove_many(self, bucket: str, keys: Sequence[str]) -> int:
        """Delete exactly these keys (one request per 1,000); how many were asked. Deleting a
        key that is gone is not an error; a refused delete raises `DeleteFailed`."""
        keys = list(keys)
        if not keys:
            return 0
        return await asyncio.to_thread(self._remove_keys, bucket, keys, "named")

    def _remove_keys(self, bucket: str, keys: list[str], what: str) -> int:
        if not keys:
            return 0
        # remove_objects is lazy: its errors only exist once iterated.
        S3_REQUESTS.labels(kind="DELETE_MANY").inc()
        errors = list(self.client.remove_objects(bucket, (DeleteObject(key) for key in keys)))
        if errors:
            first = errors[0]
            raise DeleteFailed(
                f"{len(errors)} of {len(keys)} objects {what} in {bucket!r} were not deleted; "
                f"first: {first.name!r}: {first.code} {first.message or ''}"
            )
        return len(keys)

    async def presigned_get(
        self,
        bucket: str,
        key: str,
        expires_s: int = 300,
        *,
        response_content_type: str | None = None,
    ) -> str:
        """A GET URL; `response_content_type` overrides the stored object's type in the answer
        (a content-addressed object shared by files of different types)."""
        headers = (
            {"response-content-type": response_content_type} if response_content_type else None
        )
        return await asyncio.to_thread(
            self.client.presigned_get_object,
            bucket,
            key,
            timedelta(seconds=expires_s),
            response_headers=headers,  # type: ignore[arg-type]
        )

    async def presigned_put(self, bucket: str, key: str, expires_s: int = 300) -> str:
        """A PUT URL for one object: whoever holds it may write that key until it expires,
        without holding storage credentials."""
        return await asyncio.to_thread(
            self.client.presigned_put_object, bucket, key, timedelta(seconds=expires_s)
        )

    async def ping(self) -> bool:
        try:
            await asyncio.to_thread(self.client.list_buckets)
            return True
        except Exception:
            return False
