"""Bearer tokens: what is accepted, and what each refusal says."""

import jwt
import pytest
from gateway_testkit import SECRET, make_token

from atelier_gateway.auth import TokenRejected, User, authenticate


def check(token: str | None) -> User:
    return authenticate(token, secret=SECRET, issuer="atelier", leeway_s=0)


def refusal(token: str | None) -> str:
    with pytest.raises(TokenRejected) as caught:
        check(token)
    assert caught.value.status_code == 401
    assert caught.value.code == "unauthorized"
    return caught.value.message


def test_a_good_token_names_the_user_and_projects() -> None:
    user = check(make_token("alice", ["alpha", "beta"]))
    assert user.id == "alice"
    assert user.is_granted("alpha") and user.is_granted("beta")
    assert not user.is_granted("gamma")


def test_a_token_without_projects_grants_nothing() -> None:
    token = jwt.encode(
        {"sub": "alice", "iss": "atelier", "exp": 4_102_444_800}, SECRET, algorithm="HS256"
    )
    assert check(token).projects == frozenset()


def test_missing_token() -> None:
    assert "Authorization: Bearer" in refusal(None)


def test_expired_token() -> None:
    assert "expired" in refusal(make_token(expires_in=-60))


def test_wrong_signature() -> None:
    assert "not valid" in refusal(make_token(secret="another-secret-of-sufficient-len"))


def test_garbage() -> None:
    assert "not valid" in refusal("not-a-jwt")


def test_wrong_issuer() -> None:
    assert "iss" in refusal(make_token(iss="someone-else"))


def test_token_without_expiry_is_refused() -> None:
    token = jwt.encode({"sub": "alice", "iss": "atelier", "projects": []}, SECRET, "HS256")
    assert "`exp`" in refusal(token)


def test_unsigned_token_is_refused() -> None:
    token = jwt.encode(
        {"sub": "alice", "iss": "atelier", "exp": 4_102_444_800, "projects": ["alpha"]},
        key=None,
        algorithm="none",
    )
    assert "not valid" in refusal(token)


def test_projects_must_be_a_list_of_ids() -> None:
    token = jwt.encode(
        {"sub": "alice", "iss": "atelier", "exp": 4_102_444_800, "projects": "alpha"},
        SECRET,
        algorithm="HS256",
    )
    assert "projects" in refusal(token)
