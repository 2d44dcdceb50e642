"""Fixtures every adapter test module shares. A module serving a fake defines `fake_server`
(module-scoped, `(base_url, state)`, see `adapter_support.serve`)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

# The adapter tests share `adapter_support.py`; pytest's importlib import mode (pyproject's
# addopts) does not put this folder on the import path by itself.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        yield client


@pytest.fixture
def base_url(fake_server: tuple[str, Any]) -> str:
    return fake_server[0]
