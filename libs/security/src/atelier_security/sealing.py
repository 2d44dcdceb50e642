"""Provider keys at rest and in transit: AES-GCM from `cryptography`, nothing home-made.

Two keys, both derived with HKDF-SHA256 from a configured secret (so operators may set any long
random string, and one secret never serves two purposes):

- the **at-rest** key (`ATELIER_PROFILES_CREDENTIALS_KEY`) seals what the database stores; the
  provider name is the associated data, so a ciphertext copied onto another provider's row does
  not open;
- the **transport** key (`ATELIER_CREDENTIALS_TRANSPORT_KEY`, shared with the workers) seals the
  key in a `profiles.query.credentials` reply, so NATS never carries the plaintext. Profiles
  seals with it and the workers open with it: one implementation, shared through this lib.

Format of a sealed value: `v1.` + base64url(12-byte nonce + ciphertext with its 16-byte tag).
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

AT_REST_INFO = b"atelier credentials at rest v1"
TRANSPORT_INFO = b"atelier credentials transport v1"
_VERSION = "v1."
_NONCE_BYTES = 12


class SealBroken(Exception):
    """A sealed value does not open: wrong key, tampered with, or not ours."""


def derive_key(secret: str, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret.encode())


def _associated_data(provider: str) -> bytes:
    return f"provider:{provider}".encode()


class Sealer:
    """Seals and opens provider keys with one derived AES-256-GCM key."""

    def __init__(self, secret: str, info: bytes) -> None:
        self._aead = AESGCM(derive_key(secret, info))

    def __repr__(self) -> str:  # never show key material, even by accident
        return f"{type(self).__name__}(<key>)"

    def seal(self, provider: str, plaintext: str, *, nonce: bytes | None = None) -> str:
        nonce = nonce if nonce is not None else os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), _associated_data(provider))
        return _VERSION + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, provider: str, sealed: str) -> str:
        if not sealed.startswith(_VERSION):
            raise SealBroken("unknown format")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(_VERSION) :])
            nonce, body = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
            return self._aead.decrypt(nonce, body, _associated_data(provider)).decode()
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise SealBroken("does not open with this key") from exc


def at_rest_sealer(secret: str) -> Sealer:
    return Sealer(secret, AT_REST_INFO)


def transport_sealer(secret: str) -> Sealer:
    return Sealer(secret, TRANSPORT_INFO)


def mask(key: str) -> str:
    """What an admin sees of a stored key: its last four characters, and only for long keys."""
    return f"••••{key[-4:]}" if len(key) >= 16 else "••••"
