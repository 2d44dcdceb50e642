"""The media routes' bodies: landed images and "use this image"."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from atelier_contracts.media import MediaAssigned, MediaItem, ProjectAssignmentsReply
from atelier_gateway.models.shown import shown_fields
from atelier_gateway.models.urls import media_urls, project_assignments_url


class MediaOut(BaseModel):
    """A landed image and its provenance; storage keys stay inside Atelier."""

    id: str
    project: str
    job_id: str
    index: int
    content_type: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    profile_id: str
    provider: str
    model: str
    prompt: str
    size: str
    seed: int | None
    revised_prompt: str | None
    created_at: datetime
    content_url: str
    thumbnail_url: str

    @classmethod
    def of(cls, item: MediaItem) -> MediaOut:
        return cls(**shown_fields(cls, item), **media_urls(item.id))


class MediaPage(BaseModel):
    items: list[MediaOut]
    total: int


class AssignBody(BaseModel):
    """`POST /v1/media/{id}/assign`: use this image as the project's cover or an element's."""

    # The validator's rule, said in the schema too, so a client generated from the document
    # (or schemathesis) knows an element_id goes with `element` and only with it.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {
                    "properties": {"target": {"const": "cover"}, "element_id": {"type": "null"}},
                },
                {
                    "properties": {
                        "target": {"const": "element"},
                        "element_id": {"type": "string"},
                    },
                    "required": ["element_id"],
                },
            ]
        },
    )

    target: Literal["cover", "element"] = Field(examples=["cover"])
    element_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The worldbuilding element whose image this becomes (target `element`)",
        examples=["mara-vell"],
    )

    @model_validator(mode="after")
    def _element_id_for_elements_only(self) -> AssignBody:
        if self.target == "element" and not self.element_id:
            raise ValueError("target 'element' needs an element_id")
        if self.target == "cover" and self.element_id is not None:
            raise ValueError("target 'cover' takes no element_id")
        return self


class AssignmentLinks(BaseModel):
    assignments: str


class AssignmentAccepted(BaseModel):
    """The choice is stored as a durable `media.assigned` event; media records it moments later
    (newest choice per slot wins), after which `links.assignments` shows it."""

    media_id: str
    project: str
    target: Literal["cover", "element"]
    element_id: str | None
    assigned_at: datetime
    event_id: str
    links: AssignmentLinks

    @classmethod
    def of(cls, event: MediaAssigned) -> AssignmentAccepted:
        # The event's own fields as it says them (its id a string), its time as `assigned_at`.
        return cls.model_validate(
            {
                **event.model_dump(mode="json"),
                "assigned_at": event.occurred_at,
                "links": AssignmentLinks(assignments=project_assignments_url(event.project)),
            }
        )


class ProjectAssignments(BaseModel):
    """A project's cover and the images chosen for its elements (by element id)."""

    project: str
    cover: MediaOut | None
    elements: dict[str, MediaOut]

    @classmethod
    def of(cls, project: str, reply: ProjectAssignmentsReply) -> ProjectAssignments:
        return cls(
            project=project,
            cover=MediaOut.of(reply.cover) if reply.cover else None,
            elements={element: MediaOut.of(item) for element, item in reply.elements.items()},
        )
