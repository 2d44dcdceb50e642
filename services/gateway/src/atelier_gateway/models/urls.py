"""Where the API serves what it links to, so every link is written one way."""

from __future__ import annotations


def generation_url(job_id: str) -> str:
    return f"/v1/generations/{job_id}"


def generation_events_url(job_id: str) -> str:
    return f"/v1/generations/{job_id}/events"


def media_content_url(media_id: str) -> str:
    return f"/v1/media/{media_id}/content"


def media_thumbnail_url(media_id: str) -> str:
    return f"/v1/media/{media_id}/thumbnail"


def media_urls(media_id: str) -> dict[str, str]:
    """Where an image's bytes are served: `content_url` and `thumbnail_url`."""
    return {
        "content_url": media_content_url(media_id),
        "thumbnail_url": media_thumbnail_url(media_id),
    }


def project_assignments_url(project: str) -> str:
    return f"/v1/projects/{project}/assignments"
