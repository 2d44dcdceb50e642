"""The gateway's client of media's project files, against fake media subscribers on FastStream's
in-memory broker: subjects, paging, batching, refusals kept in replies, silence as a 503."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from faststream.nats import NatsBroker, TestNatsBroker

from atelier_contracts.errors import Unavailable
from atelier_contracts.media import (
    MarkDeliveredCommand,
    MarkDeliveredReply,
    ProjectFile,
    ProjectFileQuery,
    ProjectFileReply,
    ProjectFilesQuery,
    ProjectFilesReply,
    StoreFileCommand,
    StoreFileReply,
    UploadSlotReply,
    UploadSlotRequest,
)
from atelier_contracts.profiles import RemoteError
from atelier_contracts.subjects import Subject
from atelier_gateway.inkweld.backends import ProjectFiles


def project_file(name: str) -> ProjectFile:
    return ProjectFile(
        project="proj-1",
        filename=name,
        content_type="text/plain",
        size_bytes=1,
        sha256="ab" * 32,
        uploaded_at=datetime(2026, 1, 1, tzinfo=UTC),
        uploaded_by="user-1",
    )


ALL_FILES = [project_file(f"f{i:04}.txt") for i in range(2500)]


def fake_media() -> tuple[NatsBroker, list[MarkDeliveredCommand]]:
    broker = NatsBroker()
    marks: list[MarkDeliveredCommand] = []

    @broker.subscriber(Subject.MEDIA_UPLOAD_SLOT)
    async def slot(request: UploadSlotRequest) -> UploadSlotReply:
        return UploadSlotReply(
            staging_key=f"uploads/{request.project}/{'0' * 32}",
            put_url="http://s3/put",
            expires_s=300,
        )

    @broker.subscriber(Subject.MEDIA_STORE_FILE)
    async def store(command: StoreFileCommand) -> StoreFileReply:
        if command.filename == "..":
            return StoreFileReply(
                error=RemoteError(code="invalid_filename", status=400, message="bad name")
            )
        return StoreFileReply(file=project_file(command.filename or "cover-1.jpg"))

    @broker.subscriber(Subject.MEDIA_FILES)
    async def files(query: ProjectFilesQuery) -> ProjectFilesReply:
        page = ALL_FILES[query.offset : query.offset + query.limit]
        return ProjectFilesReply(files=page, total=len(ALL_FILES))

    @broker.subscriber(Subject.MEDIA_FILE)
    async def file(query: ProjectFileQuery) -> ProjectFileReply:
        if query.filename != "f0001.txt":
            return ProjectFileReply()
        return ProjectFileReply(file=ALL_FILES[1], content_url="http://s3/get")

    @broker.subscriber(Subject.MEDIA_MARK_DELIVERED)
    async def mark(command: MarkDeliveredCommand) -> MarkDeliveredReply:
        marks.append(command)
        return MarkDeliveredReply(marked=len(command.media_ids))

    return broker, marks


def store_command(filename: str) -> StoreFileCommand:
    # Built without validation: the client must carry media's refusal, whatever the gateway sent.
    return StoreFileCommand.model_construct(
        project="proj-1",
        filename=filename,
        staging_key="uploads/proj-1/" + "0" * 32,
        size_bytes=1,
        sha256="ab" * 32,
        content_type=None,
        uploaded_by="user-1",
        as_cover=False,
    )


async def test_the_client_asks_media_on_its_subjects() -> None:
    broker, marks = fake_media()
    async with TestNatsBroker(broker):
        client = ProjectFiles(broker)
        slot = await client.upload_slot("proj-1")
        assert slot.staging_key == "uploads/proj-1/" + "0" * 32 and slot.put_url is not None

        stored = await client.store_file(store_command("a.txt"))
        assert stored.file is not None and stored.file.filename == "a.txt"
        refused = await client.store_file(store_command(".."))
        assert refused.file is None and refused.error is not None
        assert refused.error.to_error().status_code == 400

        assert await client.files("proj-1") == ALL_FILES  # three pages of 1000

        found = await client.file("proj-1", "f0001.txt")
        assert found.file == ALL_FILES[1] and found.content_url == "http://s3/get"
        missing = await client.file("proj-1", "nope.txt")
        assert missing.file is None and missing.content_url is None

        ids = [f"m{i}" for i in range(20)]
        assert await client.mark_delivered("proj-1", ids) == 20
        assert [len(m.media_ids) for m in marks] == [16, 4]
        assert await client.mark_delivered("proj-1", []) == 0


async def test_media_not_answering_is_503() -> None:
    broker = NatsBroker()  # nobody answers on it
    async with TestNatsBroker(broker):
        client = ProjectFiles(broker, query_timeout_s=0.2, store_timeout_s=0.2)
        with pytest.raises(Unavailable, match="media service"):
            await client.upload_slot("proj-1")
        with pytest.raises(Unavailable, match="media service"):
            await client.store_file(store_command("a.txt"))
