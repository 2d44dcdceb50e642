import jwt
import pytest

from atelier_devstack.tokens import mint_app_admin_token, mint_user_token

SECRET = "a-test-secret-that-is-at-least-32-bytes-long"


def test_token_carries_user_projects_and_expiry() -> None:
    token = mint_user_token(SECRET, "user-1", ["p1", "p2"], ttl_s=60)

    claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer="atelier")

    assert claims["sub"] == "user-1"
    assert claims["projects"] == ["p1", "p2"]
    assert claims["exp"] - claims["iat"] == 60
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_token_is_rejected_with_another_secret() -> None:
    token = mint_user_token(SECRET, "user-1", [])

    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, SECRET + "x", algorithms=["HS256"])


def test_app_admin_token_carries_the_admin_role_the_app_routes_ask_for() -> None:
    token = mint_app_admin_token(SECRET, "demo", ["demo__my-novel"])
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], issuer="atelier")
    assert (claims["sub"], claims["projects"], claims["roles"]) == (
        "demo",
        ["demo__my-novel"],
        ["admin"],
    )
    # A plain user token has no role at all.
    assert "roles" not in jwt.decode(
        mint_user_token(SECRET, "u", []), SECRET, algorithms=["HS256"], issuer="atelier"
    )
