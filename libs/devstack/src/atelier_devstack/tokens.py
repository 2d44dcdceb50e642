"""User tokens for local runs and tests, shaped like the ones the gateway accepts."""

from __future__ import annotations

import time

import jwt

ISSUER = "atelier"
ALGORITHM = "HS256"
DEFAULT_TTL_S = 30 * 86400  # long enough that a local session never hits expiry mid-work


# The role the gateway's app routes (`/api/v1/admin/...`) require of an Atelier token.
APP_ADMIN_ROLE = "admin"


def mint_user_token(
    secret: str,
    user_id: str,
    projects: list[str],
    ttl_s: int = DEFAULT_TTL_S,
    *,
    roles: list[str] | None = None,
) -> str:
    """An HS256 JWT for `user_id` with access to `projects` (and `roles`, when given)."""
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": user_id,
        "projects": list(projects),
        "iat": now,
        "exp": now + ttl_s,
        "iss": ISSUER,
    }
    if roles:
        claims["roles"] = list(roles)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def mint_app_admin_token(
    secret: str, user_id: str, projects: list[str], ttl_s: int = DEFAULT_TTL_S
) -> str:
    """A token for the app's admin pages: a user token with the `admin` role, which is what the
    gateway's app routes ask of an Atelier token (docs/inkweld.md, "Who may call"). It opens
    the app's profile and audit pages, never the operator's admin API (keys, limits)."""
    return mint_user_token(secret, user_id, projects, ttl_s, roles=[APP_ADMIN_ROLE])
