"""Prompt composition: toggles, flattening, trimming, templates. Pure functions, no I/O."""

from datetime import UTC, datetime
from typing import Any

from atelier_context.composition import (
    assemble_prompt,
    element_line,
    flatten_data,
    trim_at_boundary,
)
from atelier_contracts.comfyui import PROMPT_NOT_USED_NOTE
from atelier_contracts.jobs import (
    ContextElement,
    ElementImage,
    GenerationContext,
    JobRequested,
    SendToggles,
    Target,
)
from atelier_contracts.testing import job_requested, profile_snapshot


def _request(
    prompt: str,
    elements: list[ContextElement],
    limit: int = 4000,
    *,
    target: Target | None = None,
    title: str | None = None,
    description: str | None = None,
    **options: Any,
) -> JobRequested:
    return job_requested(
        profile=profile_snapshot(prompt_max_length=limit),
        prompt=prompt,
        options=options,
        context=GenerationContext(
            elements=elements, project_title=title, project_description=description
        ),
        target=target or Target(),
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


def _port() -> ContextElement:
    return ContextElement(
        id="e2",
        name="Port Azure",
        type="location",
        description="A harbour city of white stone. Its lighthouse never sleeps.",
        data={"climate": "humid"},
    )


# --- flattening ------------------------------------------------------------------------------


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


def test_flatten_reads_camel_case_skips_references_and_names_records() -> None:
    assert flatten_data(
        {
            "eyeColor": "grey",
            "guildId": "g-17",
            "member_ids": ["a", "b"],
            "createdAt": "2024-01-01",
            "_rev": 3,
            "age": 0,
            "alive": False,
            "relationships": [
                {"name": "Tom", "role": "brother", "id": "c9"},
                {"role": "rival"},
                None,
            ],
            "motto": "  Never\n  again  ",
            "nested": {"deeper": {"deepest": {"colour": "red"}}, "blank": {}},
        }
    ) == [
        "eye color: grey",
        "age: 0",
        "alive: no",
        "relationships: Tom (role: brother), (role: rival)",
        "motto: Never again",
        "nested deeper deepest colour: red",
    ]


# --- toggles ---------------------------------------------------------------------------------


def test_user_prompt_first_then_one_line_per_element() -> None:
    out = assemble_prompt(_request("A portrait at dusk", [_mara(), _port()]), max_elements=4)
    assert out.prompt == (
        "A portrait at dusk\n\nContext:\nMara Vell (character): A smuggler with a scar. "
        "eyes: green; tags: pilot, outlaw; looks hair: black.\n"
        "Port Azure (location): A harbour city of white stone. Its lighthouse never sleeps. "
        "climate: humid."
    )
    assert out.elements_used == ["e1", "e2"]
    assert out.notes == []


def test_toggles_are_honoured() -> None:
    only_data = assemble_prompt(_request("x", [_mara(description=False)]), 4)
    assert "smuggler" not in only_data.prompt and "eyes: green" in only_data.prompt
    only_description = element_line(_mara(data=False))
    assert only_description == "Mara Vell (character): A smuggler with a scar."
    nothing = assemble_prompt(_request("x", [_mara(description=False, data=False)]), 4)
    assert nothing.prompt == "x"
    assert nothing.elements_used == []
    assert "nothing selected" in nothing.notes[0]


def test_an_element_sending_only_its_image_is_used_and_named() -> None:
    element = _mara(description=False, data=False).model_copy(
        update={"image": ElementImage(media_id="m1")}
    )
    out = assemble_prompt(_request("x", [element]), 4, image_element_ids={"e1"})
    assert out.prompt == "x\n\nContext:\nReference images, in order: Mara Vell."
    assert out.elements_used == ["e1"]
    assert out.notes == []


def test_extra_elements_are_named_in_notes() -> None:
    many = [_mara().model_copy(update={"id": f"e{i}", "name": f"N{i}"}) for i in range(6)]
    out = assemble_prompt(_request("x", many), max_elements=4)
    assert len(out.elements_used) == 4
    assert "N4, N5" in out.notes[0]


def test_negative_prompt_comes_from_options() -> None:
    out = assemble_prompt(_request("x", [], negative_prompt="blurry"), 4)
    assert out.negative_prompt == "blurry"


def _on_comfyui(request: JobRequested, node_map: dict[str, Any]) -> JobRequested:
    profile = request.profile.model_copy(
        update={"provider": "comfyui", "provider_config": {"node_map": node_map}}
    )
    return request.model_copy(update={"profile": profile})


def test_a_workflow_without_text_input_notes_that_the_prompt_is_not_used() -> None:
    request = _on_comfyui(_request("a lighthouse", [_mara()]), {"prompt": None})
    out = assemble_prompt(request, 4)
    assert out.notes == [PROMPT_NOT_USED_NOTE]
    assert out.prompt.startswith("a lighthouse")  # still stored and shown as written


def test_a_workflow_that_takes_the_prompt_has_no_such_note() -> None:
    assert assemble_prompt(_on_comfyui(_request("x", []), {"prompt": "6.text"}), 4).notes == []
    # Only ComfyUI reads a node map.
    offline = _request("x", []).model_copy(deep=True)
    offline.profile.provider_config["node_map"] = {"prompt": None}
    assert assemble_prompt(offline, 4).notes == []


# --- trimming --------------------------------------------------------------------------------


def test_context_is_trimmed_never_the_user_prompt() -> None:
    user = "Keep every word of this prompt"
    out = assemble_prompt(_request(user, [_mara()], limit=len(user) + 40), 4)
    assert out.prompt.startswith(user)
    assert len(out.prompt) <= len(user) + 40
    assert "shortened" in out.notes[0]


def test_trimming_cuts_at_a_sentence_and_says_what_was_left_out() -> None:
    user = "A harbour at night"
    full = assemble_prompt(_request(user, [_mara(), _port()]), 4).prompt
    # Room for Mara's line and the first sentence of Port Azure's, not the second one.
    limit = full.index(" Its lighthouse") + 5
    out = assemble_prompt(_request(user, [_mara(), _port()], limit=limit), 4)
    assert out.prompt == full[: full.index(" Its lighthouse")]
    assert out.prompt.endswith("A harbour city of white stone.")
    assert out.elements_used == ["e1", "e2"]
    [note] = out.notes
    assert f"{limit}-character prompt limit" in note
    assert "Port Azure cut short" in note
    assert "Your own prompt was kept whole." in note

    tight = assemble_prompt(_request(user, [_mara(), _port()], limit=len(full) - 90), 4)
    assert "Port Azure" not in tight.prompt
    assert tight.elements_used == ["e1"]
    assert "Port Azure left out" in tight.notes[0]


def test_no_room_at_all_leaves_the_prompt_alone_without_a_dangling_heading() -> None:
    user = "Exactly the limit"
    out = assemble_prompt(_request(user, [_mara()], limit=len(user)), 4)
    assert out.prompt == user
    assert out.elements_used == []
    assert "Mara Vell left out" in out.notes[0]


def test_trim_prefers_sentences_then_words() -> None:
    text = "One two three. Four five six seven"
    assert trim_at_boundary(text, 100) == text
    assert trim_at_boundary(text, 20) == "One two three."
    assert trim_at_boundary("One two three four", 10) == "One two"
    assert trim_at_boundary("Unbreakable", 5) == ""


# --- templates -------------------------------------------------------------------------------


def test_cover_names_the_project_and_asks_for_a_portrait() -> None:
    out = assemble_prompt(
        _request(
            "Stormy sea",
            [_mara()],
            target=Target(kind="cover"),
            title="The Salt Road",
            description="A smuggler's last run across a drowned empire",
        ),
        4,
    )
    assert out.prompt.startswith(
        'Stormy sea\n\nCover art for "The Salt Road": A smuggler\'s last run across a drowned '
        "empire. Portrait composition (taller than wide), made to be a book cover.\n\nContext:\n"
        "Mara Vell (character):"
    )
    untitled = assemble_prompt(_request("Stormy sea", [], target=Target(kind="cover")), 4)
    assert untitled.prompt == (
        "Stormy sea\n\nCover art for this story. Portrait composition (taller than wide), made "
        "to be a book cover."
    )


def test_element_picture_template_names_the_element() -> None:
    out = assemble_prompt(
        _request("On the docks", [_mara()], target=Target(kind="element", element_id="e1")), 4
    )
    assert "\n\nA picture of Mara Vell (character) for its element card: one clear subject" in (
        out.prompt
    )
    unknown = assemble_prompt(
        _request("On the docks", [], target=Target(kind="element", element_id="zz")), 4
    )
    assert "A picture of a worldbuilding element for its element card" in unknown.prompt


def test_template_survives_trimming_before_the_context() -> None:
    request = _request("Sea", [_mara(), _port()], target=Target(kind="cover"), title="Salt")
    full = assemble_prompt(request, 4).prompt
    limit = full.index("\n\nContext:") + 30
    out = assemble_prompt(
        _request("Sea", [_mara(), _port()], limit=limit, target=Target(kind="cover"), title="Salt"),
        4,
    )
    assert "Portrait composition" in out.prompt
    assert "Port Azure" not in out.prompt
