"""Media: landed images and project files as the app's media listing and file names."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable
from datetime import UTC, datetime

from atelier_contracts.generation import IMAGE_EXTENSIONS
from atelier_contracts.media import MediaItem, ProjectFile
from atelier_gateway.inkweld.models import MediaEntry


def media_filename(item: MediaItem) -> str:
    """A landed image's file name: its id, with the extension of its type."""
    extension = IMAGE_EXTENSIONS.get(item.content_type)
    return f"{item.id}.{extension}" if extension else item.id


def media_id_of(filename: str) -> str:
    stem, dot, extension = filename.rpartition(".")
    return stem if dot and extension.lower() in IMAGE_EXTENSIONS.values() else filename


def _entry(filename: str, size: int, content_type: str, uploaded_at: datetime) -> MediaEntry:
    return MediaEntry(
        filename=filename,
        size=size,
        mimeType=content_type,
        uploadedAt=uploaded_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    )


def media_entry(item: MediaItem) -> MediaEntry:
    return _entry(media_filename(item), item.size_bytes, item.content_type, item.created_at)


# The types the app's media sync lists (reference §3); other files are kept but not listed.
_LISTED_PREFIXES = ("image/", "audio/", "video/")
_LISTED_TYPES = frozenset(
    {"application/pdf", "application/epub+zip", "text/html", "text/markdown", "text/x-markdown"}
)


def is_listed_type(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind.startswith(_LISTED_PREFIXES) or kind in _LISTED_TYPES


def file_entry(file: ProjectFile) -> MediaEntry:
    return _entry(file.filename, file.size_bytes, file.content_type, file.uploaded_at)


def sync_listing(
    files: Iterable[ProjectFile],
    items: Iterable[MediaItem],
    *,
    now: datetime,
    grace_s: float,
    prefix: str = "",
) -> list[MediaEntry]:
    """What the app's media sync sees, so that it converges (docs/inkweld.md, "Media sync").

    Every file under the exact name, size and type it was uploaded with (media types only, as
    the app's backend lists); and each generated image the app has no copy of yet, as
    `<media id>.<ext>`. A generated image is the app's own once a file holds its bytes (the app
    uploads its copy as `generated-<ms>-<i>.png`): it is listed under that name only. One handed
    to the app by a synchronous generate waits `grace_s` for that upload before it is offered as
    `<media id>.<ext>` (the app lost it: a closed tab), so the app never downloads a second copy.
    """
    files = list(files)
    entries = [file_entry(f) for f in files if is_listed_type(f.content_type)]
    owned = {f.media_id for f in files if f.media_id}
    for item in items:
        if item.source != "generated" or item.id in owned:
            continue
        delivered = item.delivered_at
        if delivered is not None and (now - delivered).total_seconds() < grace_s:
            continue
        entries.append(media_entry(item))
    return sorted((e for e in entries if e.filename.startswith(prefix)), key=lambda e: e.filename)


def served_type(filename: str, stored: str) -> str:
    """The type a file is served with: from its extension, as the app's backend does (the media
    tab shows an item as an image only when it starts with `image/`), else the stored one."""
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    if filename.lower().endswith(".md"):
        guessed = "text/markdown"
    return guessed or stored
