"""Turns the worldbuilding elements a writer picked into the prompt the model is sent.

Deterministic and readable: the writer's own prompt first, then one line per element built only
from the parts the writer chose to send. What did not fit is named in `notes`, never silently lost.
"""

from __future__ import annotations

from typing import Any

from atelier_contracts.jobs import AssembledPrompt, ContextElement, JobEnriched, JobRequested

# Data keys that are bookkeeping, not description.
_INTERNAL_KEYS = {"id", "_id", "created_at", "updated_at", "image", "image_url", "media_id"}


def flatten_data(data: dict[str, Any], prefix: str = "") -> list[str]:
    """`{"looks": {"eyes": "green"}, "tags": ["a"]}` → `["looks eyes: green", "tags: a"]`."""
    parts: list[str] = []
    for key, value in data.items():
        if key in _INTERNAL_KEYS or key.startswith("_") or value in (None, "", [], {}):
            continue
        label = f"{prefix} {key}".strip().replace("_", " ")
        if isinstance(value, dict):
            parts.extend(flatten_data(value, label))
        elif isinstance(value, list):
            items = [str(v) for v in value if v not in (None, "") and not isinstance(v, dict)]
            if items:
                parts.append(f"{label}: {', '.join(items)}")
        else:
            parts.append(f"{label}: {value}")
    return parts


def element_line(element: ContextElement) -> str | None:
    pieces: list[str] = []
    if element.send.description and element.description and element.description.strip():
        pieces.append(element.description.strip().rstrip(".") + ".")
    if element.send.data:
        fields = flatten_data(element.data)
        if fields:
            pieces.append("; ".join(fields) + ".")
    if not pieces:
        return None
    return f"{element.name} ({element.type}): {' '.join(pieces)}"


def _trim_to(text: str, limit: int) -> str:
    """Cut at the last sentence or word boundary that fits."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    for boundary in (". ", "; ", " "):
        at = cut.rfind(boundary)
        if at > 0:
            return cut[: at + 1].rstrip()
    return ""


def assemble_prompt(request: JobRequested, max_elements: int) -> AssembledPrompt:
    notes: list[str] = []
    elements = request.context.elements
    if len(elements) > max_elements:
        skipped = ", ".join(e.name for e in elements[max_elements:])
        notes.append(f"Only the first {max_elements} elements are used; left out: {skipped}.")
        elements = elements[:max_elements]

    limit = request.profile.prompt_max_length
    prompt = request.prompt.strip()
    used: list[str] = []
    lines: list[str] = []
    for element in elements:
        line = element_line(element)
        if line is None:
            notes.append(f"{element.name}: nothing selected to send as text.")
            continue
        lines.append(line)
        used.append(element.id)

    if lines:
        context_block = "\n\nContext:\n" + "\n".join(lines)
        room = limit - len(prompt)
        if len(context_block) > room:
            trimmed = _trim_to(context_block, max(room, 0))
            notes.append(
                f"Context was shortened to fit the model's {limit}-character prompt limit "
                f"({len(context_block) - len(trimmed)} characters left out)."
            )
            context_block = trimmed if trimmed.strip() != "Context:" else ""
        prompt = prompt + context_block

    negative = request.options.get("negative_prompt")
    return AssembledPrompt(
        prompt=prompt,
        negative_prompt=str(negative) if negative else None,
        elements_used=used,
        notes=notes,
    )


def enrich_job(request: JobRequested, max_elements: int) -> JobEnriched:
    return JobEnriched(request=request, assembled=assemble_prompt(request, max_elements))
