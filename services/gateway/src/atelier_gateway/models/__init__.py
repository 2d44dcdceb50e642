"""The gateway's HTTP contract: request and response bodies of the public API.

These are deliberately separate from the NATS contracts they are built from (`JobView`,
`MediaItem`...): an internal field added there (object keys, provider detail for admins) must not
appear in the public API by accident, so every public field is listed here on purpose.

One module per concern (the generation request, what the generation routes answer, media, the
project style, the links between them); this package is what the routes and the facades import.
"""

from atelier_gateway.models.generations import (
    ContextPreview,
    FeatureProfile,
    Features,
    GenerationAccepted,
    GenerationEstimate,
    JobError,
    JobImageOut,
    JobList,
    JobOut,
    Links,
)
from atelier_gateway.models.media import (
    AssignBody,
    AssignmentAccepted,
    AssignmentLinks,
    MediaOut,
    MediaPage,
    ProjectAssignments,
)
from atelier_gateway.models.request import (
    ELEMENT_DATA_LIMITS,
    MAX_ELEMENTS,
    OPTIONS_LIMITS,
    PROMPT_MAX_LENGTH,
    AnyElementImage,
    ContextElementIn,
    DataUrlImage,
    ElementData,
    GenerationContextIn,
    GenerationRequestBody,
    JsonLimits,
    MediaImage,
    Options,
    StrictSendToggles,
    TargetIn,
    UrlImage,
)
from atelier_gateway.models.shown import shown_fields
from atelier_gateway.models.style import StyleBody
from atelier_gateway.models.urls import (
    generation_events_url,
    generation_url,
    media_content_url,
    media_thumbnail_url,
    project_assignments_url,
)

__all__ = [
    "ELEMENT_DATA_LIMITS",
    "MAX_ELEMENTS",
    "OPTIONS_LIMITS",
    "PROMPT_MAX_LENGTH",
    "AnyElementImage",
    "AssignBody",
    "AssignmentAccepted",
    "AssignmentLinks",
    "ContextElementIn",
    "ContextPreview",
    "DataUrlImage",
    "ElementData",
    "FeatureProfile",
    "Features",
    "GenerationAccepted",
    "GenerationContextIn",
    "GenerationEstimate",
    "GenerationRequestBody",
    "JobError",
    "JobImageOut",
    "JobList",
    "JobOut",
    "JsonLimits",
    "Links",
    "MediaImage",
    "MediaOut",
    "MediaPage",
    "Options",
    "ProjectAssignments",
    "StrictSendToggles",
    "StyleBody",
    "TargetIn",
    "UrlImage",
    "generation_events_url",
    "generation_url",
    "media_content_url",
    "media_thumbnail_url",
    "project_assignments_url",
    "shown_fields",
]
