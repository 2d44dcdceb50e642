"""User tokens for local runs and tests, shaped like the ones the gateway accepts."""

from __future__ import annotations

import time

import jwt

ISSUER = "atelier"
ALGORITHM = "HS256"
DEFAULT_TTL_S = 30 * 86400  # long enough that a local session never hits expiry mid-work


def mint_user_token(
    secret: str, user_id: str, projects: list[str], ttl_s: int = DEFAULT_TTL_S
) -> str:
    """An HS256 JWT for `user_id` with access to `projects`."""
    now = int(time.time())
    claims = {
        "sub": user_id,
        "projects": list(projects),
        "iat": now,
        "exp": now + ttl_s,
        "iss": ISSUER,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
