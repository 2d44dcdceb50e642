import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# The shared fakes live next to the tests; see gateway_testkit's docstring.
sys.path.insert(0, str(Path(__file__).parent))

from gateway_testkit import Harness, running_gateway


@pytest.fixture
async def gateway() -> AsyncIterator[Harness]:
    async with running_gateway() as harness:
        yield harness
