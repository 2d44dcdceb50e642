"""Fake provider servers speaking real wire formats, for tests and offline development."""

from atelier_fakes._common import RecordedRequest, StoredFile
from atelier_fakes.openai import (
    DEFAULT_SPEC_PATH,
    MARKERS,
    FakeOpenAIState,
    create_openai_fake,
)
from atelier_fakes.server import run_fake_in_thread

__all__ = [
    "DEFAULT_SPEC_PATH",
    "MARKERS",
    "FakeOpenAIState",
    "RecordedRequest",
    "StoredFile",
    "create_openai_fake",
    "run_fake_in_thread",
]
