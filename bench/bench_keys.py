"""keys/: our Ed25519 wrapper against raw pynacl, and trust-list verification against pyjwt."""

from __future__ import annotations

from datetime import UTC, datetime

import jwt
import nacl.signing

import keys
from bench.timing import rate, report

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def run() -> None:
    message = b"x" * 100
    key = keys.PrivateKey.generate()
    signature = key.sign(message)
    raw_sk = nacl.signing.SigningKey(key.seed())
    raw_vk = raw_sk.verify_key

    report(
        "Ed25519 verify (keys.PublicKey)",
        rate(lambda: key.public_key.verify(signature, message), n=5000),
        rate(lambda: raw_vk.verify(message, signature), n=5000),
        "raw pynacl",
    )
    report(
        "Ed25519 sign (keys.PrivateKey)",
        rate(lambda: key.sign(message), n=5000),
        rate(lambda: raw_sk.sign(message), n=5000),
        "raw pynacl",
    )

    ring = keys.Keyring()
    ring, root = ring.rotate(keys.Role.ROOT, T0)
    for i in range(300):
        ring, _ = ring.rotate(keys.Role.ISSUER, T0, scope=f"{110000 + i}")
    token = keys.sign_trust_list(ring, T0)
    crypto_root = root.public_key.to_cryptography()
    report(
        f"trust list verify ({len(ring)} keys, {len(token) // 1024} KiB)",
        rate(lambda: keys.verify_trust_list(token, root.public_key, T0), n=50),
        rate(
            lambda: jwt.decode(
                token, crypto_root, algorithms=["EdDSA"], options={"verify_exp": False}
            ),
            n=50,
        ),
        "pyjwt decode only",
    )
