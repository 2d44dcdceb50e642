"""The fake OpenAI server for the peer benchmark, with its image rendering memoized.

`python -m atelier_fakes openai` draws and PNG-encodes every answer (~20 ms of CPU at 1024²),
which on 2 cores would drown the proxies' own cost that the peer benchmark compares. Here the
same (prompt, size) is drawn once; every request still goes through the fake's real request
validation against OpenAI's OpenAPI document and gets a real, decodable PNG.

    python -m bench.fake_openai_cached --port 0 --api-key K   # same options as the fake's
"""

from __future__ import annotations

import sys
from functools import lru_cache

import atelier_fakes.openai as fake_openai
from atelier_fakes.__main__ import main as fake_main


def main(argv: list[str] | None = None) -> int:
    fake_openai.render_image = lru_cache(maxsize=64)(fake_openai.render_image)  # type: ignore[assignment]
    return fake_main(["openai", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
