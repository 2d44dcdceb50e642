"""Who is calling: a bearer JWT (HS256, shared secret) naming the user and the projects granted.

A token carries `sub` (the user id), `projects` (ids of the projects the user may use), `iss` and
`exp`. Everything a user sees or does is confined to those projects (DESIGN.md §5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt

from atelier_contracts.errors import Unauthorized

# Only the algorithm we sign with: accepting whatever the token's header names is how `none` and
# RS/HS confusion attacks get in.
ALGORITHMS = ["HS256"]


class TokenRejected(Unauthorized):
    """401; the app answers it with `WWW-Authenticate: Bearer` (RFC 6750)."""


@dataclass(frozen=True)
class User:
    id: str
    projects: frozenset[str]

    def is_granted(self, project: str) -> bool:
        return project in self.projects


def authenticate(
    token: str | None,
    *,
    secret: str,
    issuer: str,
    audience: str | None = None,
    leeway_s: float = 0.0,
) -> User:
    """The user a bearer token names, or `TokenRejected` saying what is wrong with it."""
    if not token:
        raise TokenRejected(
            "This request needs a bearer token: send `Authorization: Bearer <token>`."
        )
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=ALGORITHMS,
            issuer=issuer,
            audience=audience,
            leeway=leeway_s,
            options={"require": ["sub", "exp", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRejected("The bearer token has expired; sign in again.") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRejected(f"The bearer token lacks the `{exc.claim}` claim.") from None
    except jwt.InvalidIssuerError:
        raise TokenRejected(
            f"The bearer token was not issued by {issuer!r} (`iss` claim)."
        ) from None
    except jwt.InvalidAudienceError:
        raise TokenRejected("The bearer token is meant for another audience (`aud`).") from None
    except jwt.InvalidTokenError:
        # Bad signature, malformed, wrong algorithm, not yet valid: the caller can't fix any of
        # them except by getting a new token, and details would only help someone forging one.
        raise TokenRejected("The bearer token is not valid; sign in again.") from None

    subject = claims.get("sub")
    projects = claims.get("projects", [])
    if not isinstance(subject, str) or not subject:
        raise TokenRejected("The bearer token's `sub` claim must name the user.")
    if not isinstance(projects, list) or not all(isinstance(p, str) for p in projects):
        raise TokenRejected("The bearer token's `projects` claim must be a list of project ids.")
    return User(id=subject, projects=frozenset(projects))
