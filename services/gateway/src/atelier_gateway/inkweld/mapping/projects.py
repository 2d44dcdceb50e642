"""Projects: the app's `username/slug` as an Atelier project id."""

from __future__ import annotations

import re
from collections.abc import Iterable

from atelier_contracts.errors import InvalidInput
from atelier_contracts.subjects import PROJECT_ID_PATTERN

# The app names a project `username/slug`; Atelier's project ids are one NATS subject token.
PROJECT_KEY_SEPARATOR = "__"
_KEY_PART_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_PROJECT_RE = re.compile(PROJECT_ID_PATTERN)


def project_of(username: str, slug: str) -> str | None:
    """`alice`, `my-novel` → `alice__my-novel`; None when they cannot make a project id."""
    project = f"{username}{PROJECT_KEY_SEPARATOR}{slug}"
    if not (_KEY_PART_RE.match(username) and _KEY_PART_RE.match(slug)):
        return None
    return project if _PROJECT_RE.match(project) else None


def project_of_key(key: str) -> str | None:
    """A `projectKey`: `username/slug` as above, or an Atelier project id as it is."""
    if "/" in key:
        username, _, slug = key.partition("/")
        return project_of(username, slug)
    return key if _PROJECT_RE.match(key) else None


def generation_project(project_key: str | None, granted: Iterable[str]) -> str:
    """The project a generation lands in: the key's, or the caller's only project."""
    if project_key is not None:
        project = project_of_key(project_key)
        if project is None:
            raise InvalidInput(
                f"projectKey {project_key!r} is not a project: use username/slug, letters, "
                "digits, '-' and '_' only."
            )
        return project
    projects = sorted(granted)
    if len(projects) != 1:
        raise InvalidInput(
            "Name the project the images go to: projectKey (username/slug)"
            + ("." if projects else "; your account has no project.")
        )
    return projects[0]
