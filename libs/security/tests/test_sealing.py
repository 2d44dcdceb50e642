import pytest

from atelier_security import SealBroken, at_rest_sealer, mask, transport_sealer


def test_round_trip_and_binding_to_the_provider() -> None:
    sealer = transport_sealer("a long random transport secret")
    sealed = sealer.seal("openai", "sk-secret-value-123456")
    assert "sk-secret" not in sealed
    assert sealer.open("openai", sealed) == "sk-secret-value-123456"
    with pytest.raises(SealBroken):
        sealer.open("gemini", sealed)  # copied onto another provider: refused


def test_purposes_do_not_share_keys() -> None:
    sealed = at_rest_sealer("same secret").seal("openai", "sk-x")
    with pytest.raises(SealBroken):
        transport_sealer("same secret").open("openai", sealed)


def test_mask_shows_at_most_four_characters() -> None:
    assert mask("sk-0123456789abcdef") == "••••cdef"
    assert mask("short") == "••••"
    assert "Sealer" in repr(transport_sealer("s")) and "s" not in repr(transport_sealer("s"))[7:]
