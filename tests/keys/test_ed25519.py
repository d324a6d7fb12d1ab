"""Ed25519: RFC 8032 known answers, round-trips, tampering, bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys import InvalidSignature, MalformedKey, PrivateKey, PublicKey

# RFC 8032 section 7.1, TEST 1-3 and TEST SHA(abc): (secret key, public key, message, signature).
RFC8032_VECTORS = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e3970"
        "1cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613"
        "d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760"
        "984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23"
        "a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c6"
        "6431e0303dca179c138ac17ad9bef1177331a704",
    ),
]


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032_VECTORS)
def test_rfc8032_known_answers(secret: str, public: str, message: str, signature: str) -> None:
    key = PrivateKey.from_seed(bytes.fromhex(secret))
    assert key.public_key.to_bytes().hex() == public
    assert key.sign(bytes.fromhex(message)).hex() == signature
    PublicKey.from_bytes(bytes.fromhex(public)).verify(
        bytes.fromhex(signature), bytes.fromhex(message)
    )


def test_rfc8037_thumbprint_of_the_appendix_key() -> None:
    # RFC 8037 appendix A.2/A.3: the Ed25519 key of A.1 and its RFC 7638 thumbprint.
    key = PrivateKey.from_seed(
        bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    )
    assert key.public_key.to_jwk() == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
    }
    assert key.key_id == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


SEEDS = st.binary(min_size=32, max_size=32)


@given(seed=SEEDS, message=st.binary(max_size=512))
def test_sign_verify_round_trip(seed: bytes, message: bytes) -> None:
    key = PrivateKey.from_seed(seed)
    key.public_key.verify(key.sign(message), message)


@given(seed=SEEDS, message=st.binary(min_size=1, max_size=256), data=st.data())
def test_any_bit_flip_in_message_or_signature_fails(
    seed: bytes, message: bytes, data: st.DataObject
) -> None:
    key = PrivateKey.from_seed(seed)
    signature = key.sign(message)
    bit = data.draw(st.integers(0, len(message) * 8 - 1))
    changed = bytearray(message)
    changed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(InvalidSignature):
        key.public_key.verify(signature, bytes(changed))
    bit = data.draw(st.integers(0, 511))
    bad_signature = bytearray(signature)
    bad_signature[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(InvalidSignature):
        key.public_key.verify(bytes(bad_signature), message)


@given(a=SEEDS, b=SEEDS, message=st.binary(max_size=64))
def test_another_key_does_not_verify(a: bytes, b: bytes, message: bytes) -> None:
    if a == b:
        return
    with pytest.raises(InvalidSignature):
        PrivateKey.from_seed(b).public_key.verify(PrivateKey.from_seed(a).sign(message), message)


@given(seed=SEEDS)
def test_jwk_and_bytes_round_trip(seed: bytes) -> None:
    public = PrivateKey.from_seed(seed).public_key
    assert PublicKey.from_jwk(public.to_jwk()) == public
    assert PublicKey.from_bytes(public.to_bytes()) == public
    assert hash(PublicKey.from_bytes(public.to_bytes())) == hash(public)


def test_wrong_types_and_lengths() -> None:
    key = PrivateKey.generate()
    with pytest.raises(TypeError):
        key.sign("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        key.public_key.verify("sig", b"data")  # type: ignore[arg-type]
    with pytest.raises(MalformedKey):
        PrivateKey.from_seed(b"\x00" * 31)
    with pytest.raises(MalformedKey):
        PublicKey.from_bytes(b"\x00" * 33)
    with pytest.raises(InvalidSignature):
        key.public_key.verify(b"\x00" * 63, b"data")
    assert issubclass(MalformedKey, ValueError)


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},
        {"kty": "OKP", "crv": "X25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "OKP", "crv": "Ed25519"},
        {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo="},
        {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            "d": "x",
        },
    ],
)
def test_malformed_jwks_are_refused(jwk: dict[str, str]) -> None:
    with pytest.raises(MalformedKey):
        PublicKey.from_jwk(jwk)


def test_repr_never_shows_the_secret() -> None:
    key = PrivateKey.generate()
    assert key.seed().hex() not in repr(key)
    assert key.seed().hex() not in str(key)
    assert key.key_id in repr(key)
