"""OpenAI-compatible images routes: `POST /v1/images/generations` and `/v1/images/edits`
(docs/openai-compat.md, docs/adr/0021-openai-compatible-images.md)."""

from atelier_gateway.openai_compat.api import router

__all__ = ["router"]
