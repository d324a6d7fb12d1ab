"""RFC 7638 thumbprints and strict base64url."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys import b64url_decode, b64url_encode, jwk_thumbprint

# RFC 7638 section 3.1: the example RSA key and its thumbprint.
RFC7638_KEY = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJ"
    "ECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Q"
    "vzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6"
    "WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}


def test_rfc7638_example() -> None:
    assert jwk_thumbprint(RFC7638_KEY) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_thumbprint_ignores_optional_members_and_order() -> None:
    bare = {"e": RFC7638_KEY["e"], "n": RFC7638_KEY["n"], "kty": "RSA"}
    assert jwk_thumbprint(bare) == jwk_thumbprint(RFC7638_KEY)


@pytest.mark.parametrize(
    "jwk", [{"kty": "XYZ"}, {"kty": "OKP", "crv": "Ed25519"}, {"kty": "OKP", "crv": 1, "x": "A"}]
)
def test_thumbprint_refuses_incomplete_keys(jwk: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="JWK"):
        jwk_thumbprint(jwk)


@given(st.binary(max_size=100))
def test_b64url_round_trip(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text
    assert b64url_decode(text) == data


@pytest.mark.parametrize("text", ["AA==", "A", "AB", "a+b/", "AAA ", "ÿÿ"])
def test_b64url_decode_is_strict(text: str) -> None:
    with pytest.raises(ValueError, match="base64url"):
        b64url_decode(text)
