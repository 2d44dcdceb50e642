from datetime import UTC, datetime
from typing import Any

from atelier_context.service import assemble_prompt, flatten_data
from atelier_contracts.jobs import ContextElement, GenerationContext, JobRequested, SendToggles
from atelier_contracts.profiles import ProfileSnapshot


def _request(
    prompt: str, elements: list[ContextElement], limit: int = 4000, **options: Any
) -> JobRequested:
    profile = ProfileSnapshot(
        id="p1",
        name="P",
        provider="offline",
        model="m",
        timeout_s=60,
        prompt_max_length=limit,
        max_reference_images=0,
        credit_cost=1,
    )
    return JobRequested(
        job_id="j1",
        user_id="u1",
        project="proj",
        profile=profile,
        prompt=prompt,
        size="256x256",
        count=1,
        options=options,
        context=GenerationContext(elements=elements),
        occurred_at=datetime.now(UTC),
    )


def _mara(**send: bool) -> ContextElement:
    return ContextElement(
        id="e1",
        name="Mara Vell",
        type="character",
        description="A smuggler with a scar",
        data={
            "eyes": "green",
            "tags": ["pilot", "outlaw"],
            "looks": {"hair": "black"},
            "id": "internal",
            "notes": "",
        },
        send=SendToggles(**send),
    )


def test_flatten_skips_empty_and_internal_keys_and_joins_lists() -> None:
    assert flatten_data(
        {
            "eyes": "green",
            "tags": ["a", "b"],
            "looks": {"hair_colour": "black"},
            "id": "x",
            "empty": "",
        }
    ) == ["eyes: green", "tags: a, b", "looks hair colour: black"]


def test_user_prompt_first_then_one_line_per_element() -> None:
    out = assemble_prompt(_request("A portrait at dusk", [_mara()]), max_elements=4)
    assert out.prompt == (
        "A portrait at dusk\n\nContext:\nMara Vell (character): A smuggler with a scar. "
        "eyes: green; tags: pilot, outlaw; looks hair: black."
    )
    assert out.elements_used == ["e1"]
    assert out.notes == []


def test_toggles_are_honoured() -> None:
    only_data = assemble_prompt(_request("x", [_mara(description=False)]), 4)
    assert "smuggler" not in only_data.prompt and "eyes: green" in only_data.prompt
    nothing = assemble_prompt(_request("x", [_mara(description=False, data=False)]), 4)
    assert nothing.prompt == "x"
    assert nothing.elements_used == []
    assert "nothing selected" in nothing.notes[0]


def test_context_is_trimmed_never_the_user_prompt() -> None:
    user = "Keep every word of this prompt"
    out = assemble_prompt(_request(user, [_mara()], limit=len(user) + 40), 4)
    assert out.prompt.startswith(user)
    assert len(out.prompt) <= len(user) + 40
    assert "shortened" in out.notes[0]


def test_extra_elements_are_named_in_notes() -> None:
    many = [_mara().model_copy(update={"id": f"e{i}", "name": f"N{i}"}) for i in range(6)]
    out = assemble_prompt(_request("x", many), max_elements=4)
    assert len(out.elements_used) == 4
    assert "N4, N5" in out.notes[0]


def test_negative_prompt_comes_from_options() -> None:
    out = assemble_prompt(_request("x", [], negative_prompt="blurry"), 4)
    assert out.negative_prompt == "blurry"
