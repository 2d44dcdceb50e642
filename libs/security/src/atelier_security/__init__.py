"""Provider keys sealed at rest and in transit; the one place Atelier does cryptography."""

from atelier_security.sealing import (
    AT_REST_INFO,
    TRANSPORT_INFO,
    SealBroken,
    Sealer,
    at_rest_sealer,
    derive_key,
    mask,
    transport_sealer,
)

__all__ = [
    "AT_REST_INFO",
    "TRANSPORT_INFO",
    "SealBroken",
    "Sealer",
    "at_rest_sealer",
    "derive_key",
    "mask",
    "transport_sealer",
]
