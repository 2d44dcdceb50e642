"""Bodies of the Inkweld API, written by hand from the schemas of its document (`openapi.json`).

Field names are the document's (camelCase), so nothing is renamed on the wire. The document
marks a field either optional (left out when there is nothing to say) or nullable and required
(always sent, possibly `null`); here a field with a default of `None` is left out when `None`,
and a field without a default is always sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

ProviderType = Literal["openai", "openrouter", "stable-diffusion", "falai", "workersai"]
ImageSize = Literal[
    "256x256",
    "512x512",
    "1024x1024",
    "1024x1536",
    "1536x1024",
    "1024x1792",
    "1792x1024",
    "832x1248",
    "1248x832",
    "864x1184",
    "1184x864",
    "896x1152",
    "1152x896",
    "768x1344",
    "1344x768",
    "1536x672",
    "1920x1080",
    "1080x1920",
    "1600x2560",
    "2560x1600",
    "1:1",
    "2:3",
    "3:2",
    "3:4",
    "4:3",
    "4:5",
    "5:4",
    "9:16",
    "16:9",
    "21:9",
    "auto",
]
AuditStatus = Literal["success", "moderated"]


class InkweldModel(BaseModel):
    # The app's own server ignores fields it does not know; so do we. JSON has no Infinity or
    # NaN, but Python's parser takes them: refused, they cannot overflow a rounding (a 500).
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    @model_serializer(mode="wrap")
    def _leave_out_absent_optionals(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name, field in type(self).model_fields.items():
                if not field.is_required() and name in data and data[name] is None:
                    del data[name]
        return data


# --- requests --------------------------------------------------------------------------------


class WorldbuildingContext(InkweldModel):
    elementId: str = Field(min_length=1, max_length=200)
    name: str = Field(max_length=300)
    type: str = Field(max_length=60)
    role: Literal["subject", "setting", "style", "reference"]
    roleDescription: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class ImageGenerateRequest(InkweldModel):
    prompt: str = Field(min_length=1, max_length=16000)
    profileId: str = Field(min_length=1, max_length=200)
    projectKey: str | None = Field(default=None, max_length=201)
    n: int | None = Field(default=None, ge=1, le=4)
    size: ImageSize | None = None
    quality: Literal["standard", "hd"] | None = None
    style: Literal["vivid", "natural"] | None = None
    negativePrompt: str | None = None
    worldbuildingContext: list[WorldbuildingContext] | None = None


class CustomImageSize(InkweldModel):
    id: str
    name: str
    width: int = Field(ge=256, le=4096)
    height: int = Field(ge=256, le=4096)
    description: str | None = None


class CustomSizesUpdate(InkweldModel):
    sizes: list[CustomImageSize]


class CreateImageModelProfileRequest(InkweldModel):
    name: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    provider: ProviderType
    modelId: str = Field(min_length=1, max_length=200)
    enabled: bool = True
    supportsImageInput: bool = False
    supportsCustomResolutions: bool = False
    usesAspectRatioOnly: bool = False
    supportedSizes: list[str] | None = None
    defaultSize: str | None = None
    modelConfig: dict[str, Any] | None = None
    sortOrder: float = 0
    creditCost: int = Field(default=1, ge=0)


class UpdateImageModelProfileRequest(InkweldModel):
    """Only the fields present change (`model_fields_set`); `null` clears a nullable one."""

    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    provider: ProviderType | None = None
    modelId: str | None = Field(default=None, min_length=1, max_length=200)
    enabled: bool | None = None
    supportsImageInput: bool | None = None
    supportsCustomResolutions: bool | None = None
    usesAspectRatioOnly: bool | None = None
    supportedSizes: list[str] | None = None
    defaultSize: str | None = None
    modelConfig: dict[str, Any] | None = None
    sortOrder: float | None = None
    creditCost: int | None = Field(default=None, ge=0)


# --- responses -------------------------------------------------------------------------------


class ErrorResponse(InkweldModel):
    """`ErrorResponse` and `ImageGenerationError`: the same shape."""

    error: str


class MessageBody(InkweldModel):
    """`MessageResponse`, `ImageMessage`, `MediaError` and `ImageError`: the same shape."""

    message: str


class PasswordPolicy(InkweldModel):
    minLength: int
    requireUppercase: bool
    requireLowercase: bool
    requireNumber: bool
    requireSymbol: bool


class SystemFeatures(InkweldModel):
    aiKillSwitch: bool
    aiKillSwitchLockedByEnv: bool
    aiAutoReview: bool
    aiImageGeneration: bool
    appMode: Literal["ONLINE", "LOCAL", "BOTH"]
    defaultServerName: str | None = None
    userApprovalRequired: bool
    emailEnabled: bool
    requireEmail: bool
    passwordPolicy: PasswordPolicy
    passkeysEnabled: bool
    passwordLoginEnabled: bool
    emailRecoveryEnabled: bool
    legacyMcpEnabled: bool
    mcpEnabled: bool


class ImageModelInfo(InkweldModel):
    id: str
    name: str
    provider: ProviderType
    supportedSizes: list[str]
    supportsQuality: bool
    supportsStyle: bool
    maxImages: int
    description: str | None = None


class ImageProviderStatus(InkweldModel):
    type: ProviderType
    name: str
    available: bool
    enabled: bool
    models: list[ImageModelInfo]
    error: str | None = None


class ImageGenerationStatus(InkweldModel):
    available: bool
    providers: list[ImageProviderStatus]
    defaultProvider: ProviderType | None = None


class GeneratedImage(InkweldModel):
    b64Json: str | None = None
    url: str | None = None
    mimeType: str | None = None
    revisedPrompt: str | None = None
    index: int
    textContent: str | None = None


class GenerateRequestEcho(InkweldModel):
    prompt: str
    size: str | None = None
    quality: str | None = None
    style: str | None = None


class ImageGenerateResponse(InkweldModel):
    created: int
    data: list[GeneratedImage]
    provider: ProviderType
    model: str
    request: GenerateRequestEcho
    textContent: str | None = None


class PublicImageModelProfile(InkweldModel):
    id: str
    name: str
    description: str | None
    provider: ProviderType
    modelId: str
    enabled: bool
    supportsImageInput: bool
    supportsCustomResolutions: bool
    usesAspectRatioOnly: bool
    supportedSizes: list[str] | None
    defaultSize: str | None
    sortOrder: float
    creditCost: float


class AdminImageModelProfile(PublicImageModelProfile):
    modelConfig: dict[str, Any] | None
    createdAt: datetime
    updatedAt: datetime


class ProviderEntry(InkweldModel):
    id: str
    name: str


class CustomSizesResponse(InkweldModel):
    sizes: list[CustomImageSize]


class AuditReceiptLine(InkweldModel):
    """An image on an audit's receipt (Atelier's `ReceiptLine`, in the app's casing)."""

    index: int
    charged: bool
    credits: float
    outcome: str
    reason: str
    mediaId: str | None = None
    errorClass: str | None = None


class AuditReceipt(InkweldModel):
    """Atelier's addition to the app's audit (ADR 0024): what the job was charged, image by
    image. The app's document does not forbid other fields and its frontend ignores them."""

    images: list[AuditReceiptLine]
    chargedImages: int
    notChargedImages: int
    creditsReserved: float
    creditsCharged: float
    creditsRefunded: float


class ImageGenerationAudit(InkweldModel):
    id: str
    userId: str
    username: str | None
    profileId: str | None
    profileName: str
    prompt: str
    referenceImageUrls: list[str] | None
    outputImageUrls: list[str] | None
    creditCost: float
    status: AuditStatus
    message: str | None
    createdAt: datetime
    receipt: AuditReceipt | None = None  # Atelier's addition; absent for jobs before receipts


class PaginatedImageAudits(InkweldModel):
    audits: list[ImageGenerationAudit]
    total: int
    page: int
    limit: int
    totalPages: int


class ProfileUsage(InkweldModel):
    profileName: str
    count: int
    credits: float


class UserUsage(InkweldModel):
    userId: str
    username: str | None
    count: int
    credits: float


class ImageAuditStats(InkweldModel):
    totalRequests: int
    totalCredits: float
    successCount: int
    moderatedCount: int
    byProfile: list[ProfileUsage]
    byUser: list[UserUsage]


class MediaEntry(InkweldModel):
    """The document's `MediaItem` (renamed: Atelier's `MediaItem` is the landed image)."""

    filename: str
    size: int
    mimeType: str | None = None
    uploadedAt: str | None = None


class MediaListResponse(InkweldModel):
    items: list[MediaEntry]
    total: int


class CoverUploaded(InkweldModel):
    """`ImageMessage` plus what the app's backend adds and its frontend reads: the cover's file
    name, fetched back through the media route."""

    message: str
    coverImage: str


class UploadedMedia(InkweldModel):
    message: str
    filename: str
    size: int
