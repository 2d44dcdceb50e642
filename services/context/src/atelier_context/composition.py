"""The prompt a model is sent, composed from what the writer picked. Pure: no I/O.

Deterministic and readable, in this order:

    <the writer's prompt, untouched>

    <the target's template: a cover or an element picture; nothing for a plain image>

    Context:
    Mara Vell (character): A smuggler with a scar. eyes: green; tags: pilot, outlaw.
    Port Azure (location): ...
    Reference images, in order: Mara Vell.

Each element line holds only the parts whose toggle is on. When the profile's prompt limit is
reached, what follows the writer's prompt is cut at a sentence (or field) boundary, else a word
boundary, and a note names what was left out: the writer's own words are never cut.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Any, Protocol

from atelier_contracts import comfyui
from atelier_contracts.jobs import AssembledPrompt, ContextElement, GenerationContext, Target
from atelier_contracts.profiles import ProfileSnapshot
from atelier_contracts.style import AppliedStyle

# Data keys that are bookkeeping, not description (compared lower-cased, without `_`/`-`).
_INTERNAL_KEYS = frozenset(
    {
        "id",
        "uuid",
        "createdat",
        "updatedat",
        "deletedat",
        "image",
        "imageurl",
        "mediaid",
        "thumbnail",
        "thumbnailurl",
    }
)
# `parent_id`, `guildId`, `memberIDs`: references to other records, meaningless to a model.
_REFERENCE_KEY_RE = re.compile(r"(?:_ids?|Ids?|IDs?)$")
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])([A-Z])")
# Names that make a list item readable on its own: `{"name": "Tom", "role": "brother"}`.
_ITEM_LABEL_KEYS = ("name", "title", "label")
_MAX_DEPTH = 4

_SENTENCE_END_RE = re.compile(r"[.!?;:](?=\s)")
_WHITESPACE_RE = re.compile(r"\s")

PORTRAIT = "Portrait composition (taller than wide), made to be a book cover."
ELEMENT_PICTURE = "one clear subject, centred, on an uncluttered background."


class AssemblyInput(Protocol):
    """What a prompt is composed from: a `JobRequested` or a `ContextPreviewQuery`."""

    @property
    def profile(self) -> ProfileSnapshot: ...
    @property
    def prompt(self) -> str: ...
    @property
    def options(self) -> dict[str, Any]: ...
    @property
    def context(self) -> GenerationContext: ...
    @property
    def target(self) -> Target: ...
    @property
    def apply_style(self) -> bool: ...


# --- data fields -----------------------------------------------------------------------------


def _is_internal(key: str) -> bool:
    normalized = key.lower().replace("_", "").replace("-", "")
    return (
        key.startswith("_")
        or normalized in _INTERNAL_KEYS
        or _REFERENCE_KEY_RE.search(key) is not None
    )


def _label(key: str) -> str:
    """`hair_colour` → `hair colour`, `eyeColor` → `eye color`."""
    spaced = _CAMEL_RE.sub(lambda m: " " + m.group(1).lower(), key)
    return " ".join(spaced.replace("_", " ").replace("-", " ").split())


def _scalar_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = " ".join(str(value).split())
    return text or None


def _item_text(value: Any, depth: int) -> str | None:
    """One list item: a scalar, or a small record (`Tom (role: brother)`)."""
    if isinstance(value, dict):
        label = next(
            (
                text
                for key in _ITEM_LABEL_KEYS
                if (text := _scalar_text(value.get(key))) and not isinstance(value.get(key), dict)
            ),
            None,
        )
        rest = flatten_data(
            {k: v for k, v in value.items() if k not in _ITEM_LABEL_KEYS}, depth=depth + 1
        )
        if label and rest:
            return f"{label} ({', '.join(rest)})"
        if label:
            return label
        return f"({', '.join(rest)})" if rest else None
    if isinstance(value, list | tuple):
        items = [t for t in (_item_text(v, depth + 1) for v in value) if t]
        return ", ".join(items) or None
    return _scalar_text(value)


def flatten_data(data: dict[str, Any], prefix: str = "", *, depth: int = 0) -> list[str]:
    """`{"looks": {"eyes": "green"}, "tags": ["a", "b"]}` → `["looks eyes: green", "tags: a, b"]`.

    Empty values and internal keys are skipped, lists joined, nested objects flattened into
    their parent's label (up to a few levels), records in lists named by their `name`.
    """
    parts: list[str] = []
    if depth > _MAX_DEPTH:
        return parts
    for raw_key, value in data.items():
        key = str(raw_key)
        if _is_internal(key):
            continue
        label = f"{prefix} {_label(key)}".strip()
        if isinstance(value, dict):
            parts.extend(flatten_data(value, label, depth=depth + 1))
        elif isinstance(value, list | tuple):
            items = [t for t in (_item_text(v, depth) for v in value) if t]
            if items:
                parts.append(f"{label}: {', '.join(items)}")
        elif (text := _scalar_text(value)) is not None:
            parts.append(f"{label}: {text}")
    return parts


# --- lines -----------------------------------------------------------------------------------


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text[-1:] in (".", "!", "?", "…") else text + "."


def element_title(element: ContextElement) -> str:
    kind = " ".join(element.type.split())
    return f"{element.name} ({kind})" if kind else element.name


def element_line(element: ContextElement) -> str | None:
    """`Name (type): description. key: value; key: value.` from the parts toggled on."""
    pieces: list[str] = []
    if element.send.description and element.description and element.description.strip():
        pieces.append(_sentence(element.description))
    if element.send.data:
        fields = flatten_data(element.data)
        if fields:
            pieces.append("; ".join(fields) + ".")
    if not pieces:
        return None
    return f"{element_title(element)}: {' '.join(pieces)}"


def target_text(source: AssemblyInput) -> str | None:
    """The template of a cover or an element picture; None for a plain library image."""
    target, context = source.target, source.context
    if target.kind == "cover":
        title = " ".join((context.project_title or "").split())
        description = " ".join((context.project_description or "").split())
        if title and description:
            head = f'Cover art for "{title}": {_sentence(description)}'
        elif title:
            head = f'Cover art for "{title}".'
        elif description:
            head = f"Cover art for this story: {_sentence(description)}"
        else:
            head = "Cover art for this story."
        return f"{head} {PORTRAIT}"
    if target.kind == "element":
        element = next((e for e in context.elements if e.id == target.element_id), None)
        subject = element_title(element) if element else "a worldbuilding element"
        return f"A picture of {subject} for its element card: {ELEMENT_PICTURE}"
    return None


# --- trimming --------------------------------------------------------------------------------


def trim_at_boundary(text: str, limit: int) -> str:
    """The longest start of `text` within `limit` characters that ends at a sentence (or field)
    boundary, else at a word boundary; "" when there is neither."""
    if len(text) <= limit:
        return text
    best = 0
    for match in _SENTENCE_END_RE.finditer(text, 0, limit + 1):
        if match.end() <= limit:
            best = match.end()
    newline = text.rfind("\n", 0, limit + 1)
    best = max(best, newline if newline > 0 else 0)
    if best > 0:
        return text[:best].rstrip()
    spaces = [m.start() for m in _WHITESPACE_RE.finditer(text, 0, limit + 1)]
    if spaces and spaces[-1] > 0:
        return text[: spaces[-1]].rstrip().rstrip(",;:-")
    return ""


def _names(items: Iterable[str]) -> str:
    listed = list(items)
    return listed[0] if len(listed) == 1 else f"{', '.join(listed[:-1])} and {listed[-1]}"


# --- the prompt ------------------------------------------------------------------------------


STYLE_LABEL = "Style: "


def assemble_prompt(
    source: AssemblyInput,
    max_elements: int,
    *,
    image_element_ids: Collection[str] = (),
    style_text: str = "",
    style_images: int = 0,
) -> AssembledPrompt:
    """The text a model is sent. `image_element_ids`: elements whose image is sent along (named
    at the end so the model knows what each picture shows). `style_text`: the project's style
    (ADR 0024), a line of its own after the target's template; `style_images`: how many of the
    style's pictures are sent after the elements' own. `style` on the result says where the
    style's words are in the prompt (empty when they were cut to fit)."""
    notes: list[str] = []
    if prompt_not_used(source.profile):
        notes.append(comfyui.PROMPT_NOT_USED_NOTE)
    elements = source.context.elements
    if len(elements) > max_elements:
        skipped = ", ".join(e.name for e in elements[max_elements:])
        notes.append(f"Only the first {max_elements} elements are used; left out: {skipped}.")
        elements = elements[:max_elements]

    prompt = source.prompt.strip()
    limit = source.profile.prompt_max_length
    # (owner, text): owner is "target", "style", "header", "refs" or an element id.
    pieces: list[tuple[str, str]] = []
    target = target_text(source)
    if target:
        pieces.append(("target", "\n\n" + target))
    style_text = " ".join(style_text.split())
    if style_text:
        pieces.append(("style", "\n\n" + STYLE_LABEL + _sentence(style_text)))
    lines: list[tuple[str, str]] = []
    for element in elements:
        line = element_line(element)
        if line is not None:
            lines.append((element.id, "\n" + line))
        elif element.id not in image_element_ids:
            notes.append(f"{element.name}: nothing selected to send.")
    with_images = [e for e in elements if e.id in image_element_ids]
    if lines or with_images or style_images:
        pieces.append(("header", "\n\nContext:"))
        pieces.extend(lines)
        if with_images or style_images:
            named = [e.name for e in with_images]
            named += [f"style reference {n}" for n in range(1, style_images + 1)]
            pieces.append(("refs", f"\nReference images, in order: {', '.join(named)}."))

    tail = "".join(text for _, text in pieces)
    room = max(limit - len(prompt), 0)
    kept_owners = {owner for owner, _ in pieces}
    if len(tail) > room:
        tail, kept_owners, note = _shorten(pieces, room, limit, elements)
        notes.append(note)

    used = [e.id for e in elements if e.id in kept_owners or e.id in image_element_ids]
    negative = source.options.get("negative_prompt")
    return AssembledPrompt(
        prompt=prompt + tail,
        negative_prompt=str(negative) if negative else None,
        elements_used=used,
        notes=notes,
        style=_style_span(pieces, len(prompt), len(prompt + tail)) if style_text else None,
    )


def _style_span(pieces: list[tuple[str, str]], base: int, end: int) -> AppliedStyle:
    """Where the style's words are in the prompt (what survived of them when it was cut);
    `version` and the images are the caller's to fill in."""
    start = base
    for owner, text in pieces:
        if owner == "style":
            words_start = start + len("\n\n" + STYLE_LABEL)
            words_end = min(start + len(text), end)
            if words_end <= words_start:
                return AppliedStyle(version=0, applied=False, note=STYLE_CUT_NOTE)
            return AppliedStyle(
                version=0,
                applied=True,
                text=text[len("\n\n" + STYLE_LABEL) : words_end - start],
                prompt_start=words_start,
                prompt_end=words_end,
            )
        start += len(text)
    return AppliedStyle(version=0, applied=False)


STYLE_CUT_NOTE = "The project style did not fit the model's prompt limit; its words were left out."


def prompt_not_used(profile: ProfileSnapshot) -> bool:
    """The profile says its model takes no text (a ComfyUI workflow whose node map has
    `"prompt": null`): the prompt is still assembled and stored, but nothing reads it."""
    return profile.provider == comfyui.PROVIDER and comfyui.prompt_not_used(profile.provider_config)


def _shorten(
    pieces: list[tuple[str, str]], room: int, limit: int, elements: list[ContextElement]
) -> tuple[str, set[str], str]:
    """Cut the context to `room` characters; say what was left out or cut short."""
    full = "".join(text for _, text in pieces)
    kept = trim_at_boundary(full, room)
    kept_owners: set[str] = set()
    dropped: list[str] = []
    cut: list[str] = []
    start = 0
    header: tuple[int, int] | None = None
    for owner, text in pieces:
        end = start + len(text)
        # What survives of this piece, ignoring the separator it starts with.
        survived = kept[start:end].strip()
        if owner == "header":
            header = (start, end)
        elif end <= len(kept):
            kept_owners.add(owner)
        elif survived:
            kept_owners.add(owner)
            cut.append(owner)
        else:
            dropped.append(owner)
        start = end
    # A "Context:" heading with nothing under it is noise.
    if header is not None and len(kept.rstrip()) <= header[1]:
        kept = kept[: header[0]].rstrip()

    names = {e.id: e.name for e in elements}
    said: list[str] = []
    left_out = [names[o] for o in dropped if o in names]
    if left_out:
        said.append(f"{_names(left_out)} left out")
    cut_short = [names[o] for o in cut if o in names]
    if cut_short:
        said.append(f"{_names(cut_short)} cut short")
    if "target" in dropped or "target" in cut:
        said.append("the cover or element-picture instructions shortened")
    if "style" in dropped or "style" in cut:
        said.append("the project style shortened")
    if "refs" in dropped or "refs" in cut:
        said.append("the list of reference images left out of the text")
    removed = len(full) - len(kept)
    note = (
        f"Context was shortened to fit the model's {limit}-character prompt limit "
        f"({removed} characters left out"
        + (f": {'; '.join(said)}" if said else "")
        + "). Your own prompt was kept whole."
    )
    return kept, kept_owners, note
