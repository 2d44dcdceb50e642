"""S3-compatible object storage on the MinIO SDK (MinIO in production, SeaweedFS locally)."""

from atelier_storage.store import DeleteFailed, ObjectStore, StoredObject

__all__ = ["DeleteFailed", "ObjectStore", "StoredObject"]
