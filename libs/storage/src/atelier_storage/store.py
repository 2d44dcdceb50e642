"""A small async face over the (synchronous) MinIO SDK.

The SDK blocks, so each call runs in a worker thread; the SDK's urllib3 pool is thread-safe.
"""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta

from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from atelier_settings import BaseServiceSettings

# What S3 servers answer for an absent key (MinIO, SeaweedFS and AWS differ on HEAD and GET).
_MISSING_OBJECT_CODES = ("NoSuchKey", "NoSuchObject", "NotFound")


class DeleteFailed(Exception):
    """Object storage refused to delete some of the objects asked for."""


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
            if not self.client.bucket_exists(bucket):
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
            try:
                return self.client.stat_object(bucket, key).size
            except S3Error as exc:
                if exc.code in _MISSING_OBJECT_CODES:
                    return None
                raise

        return await asyncio.to_thread(stat)

    async def remove(self, bucket: str, key: str) -> None:
        await asyncio.to_thread(self.client.remove_object, bucket, key)

    async def remove_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object whose key starts with `prefix`; how many there were.

        Idempotent: nothing under the prefix is not an error. Raises if any delete failed.
        """
        if not prefix:
            raise ValueError("an empty prefix would delete the whole bucket")

        def remove_all() -> int:
            keys = [
                o.object_name
                for o in self.client.list_objects(bucket, prefix=prefix, recursive=True)
                if o.object_name
            ]
            if not keys:
                return 0
            # remove_objects is lazy: its errors only exist once iterated.
            errors = list(self.client.remove_objects(bucket, (DeleteObject(key) for key in keys)))
            if errors:
                first = errors[0]
                raise DeleteFailed(
                    f"{len(errors)} of {len(keys)} objects under {prefix!r} in {bucket!r} were "
                    f"not deleted; first: {first.name!r}: {first.code} {first.message or ''}"
                )
            return len(keys)

        return await asyncio.to_thread(remove_all)

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
