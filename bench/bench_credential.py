"""Station credentials: issuance and QR verification against raw pynacl and a pyjwt verifier.

    python -m bench.bench_credential     (or add "credential" to bench/__main__.py)

Figures, each beside its baseline from the same run:

- issuance (``issue_credential``: claims, salts, digests, one signature) vs raw pynacl signing
  of the same Sig_structure;
- verification (``verify_presentation``: all ten checks, status list of 1,000,000 entries) vs the
  raw two-signature pynacl limit (the issuer's and the holder's signature over the very same
  bytes, nothing else) and vs a pyjwt verifier of the equivalent pair of JWTs (an issuer JWT
  with the same claims and ``cnf.jwk``, ``_sd`` digests and a status index; a holder JWT with
  ``iat``, ``nonce`` and ``sd_hash``; the same ten checks in Python around ``jwt.decode``);
- verification latency p50 / p99 (single calls);
- QR size in characters and version at Q and M, beside the JWT pair's; the typical case (a
  member of an 11-character grassroots union, credential issued by the province, one group
  disclosed, status index above 65,535, no challenge) is marked, with the goal (DESIGN.md
  section 5: at most 410 characters, version 15 at Q).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import jwt
import nacl.signing
import qrcode
from cryptography.hazmat.primitives.asymmetric import ed25519

import keys
from bench.timing import rate, report
from verifier import credential
from verifier.credential import issue_credential, present, verify_presentation
from verifier.statuslist import StatusList, sign_status_list, verify_status_list
from verifier.wallet import qr_version

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=30)
ISSUER_UNION, HOME_UNION = "440000", "440106-0012"
MEMBERS = 1_000_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _Setup:
    """A province's trust list (300 issuer keys), its status list, one member's credential."""

    def __init__(self) -> None:
        ring = keys.Keyring()
        ring, _ = ring.rotate(keys.Role.ROOT, T0)
        ring, self.issuer = ring.rotate(keys.Role.ISSUER, T0, scope=ISSUER_UNION)
        for i in range(300):
            ring, _ = ring.rotate(keys.Role.ISSUER, T0, scope=f"{110000 + i}")
        root = ring.current(keys.Role.ROOT, T0).public_key
        listed = keys.sign_trust_list(ring, NOW - timedelta(days=1))
        self.trust = keys.verify_trust_list(listed, root, NOW)
        self.issuer_key = ring.private_key(self.issuer.kid)
        bits = StatusList(MEMBERS)
        for i in random.Random(1).sample(range(MEMBERS), MEMBERS // 100):
            bits.set(i)
        bits.set(123_456, 0)
        token = sign_status_list(
            bits,
            uri=f"https://ul.example/status/{ISSUER_UNION}",
            issuer_key=self.issuer_key,
            kid=self.issuer.kid,
            now=NOW - timedelta(hours=1),
            ttl=timedelta(days=1),
        )
        self.status = {ISSUER_UNION: verify_status_list(token, self.trust, NOW)}
        self.holder = keys.PrivateKey.generate()
        self.member = _b64(os.urandom(16))
        assert not credential.short_kid_collisions(self.trust)  # 301 issuer keys, 4-byte kids
        self.issue_args: dict[str, Any] = {
            "issuer_key": self.issuer_key,
            "issuer": self.issuer,
            "member_id": self.member,
            "home_union": HOME_UNION,
            "holder_public_key": self.holder.public_key,
            "groups": ["delivery_rider", "hardship"],
            "status_index": 123_456,
            "issued_at": T0,
            "expires_at": T0 + timedelta(days=365),
        }
        self.issued = issue_credential(**self.issue_args)
        self.disclosure = self.issued.disclosures["delivery_rider"]
        self.text = present(self.issued.token, self.holder, disclosures=[self.disclosure], now=NOW)

    def verify(self) -> credential.VerifiedPresentation:
        return verify_presentation(
            self.text, trust_list=self.trust, status_lists=self.status, now=NOW
        )


def _raw_pair(s: _Setup) -> Callable[[], None]:
    """The same two Ed25519 checks over the same bytes, straight through pynacl."""
    parsed, _ = credential._parse(s.text)  # the very bytes verify_presentation checks
    sig_structure = credential._sig_structure(parsed.protected_item, parsed.payload_item)
    message = credential._holder_message(
        s.issued.credential_hash, parsed.proof_time, None, parsed.disclosures
    )
    issuer_vk = nacl.signing.VerifyKey(s.issuer_key.public_key.to_bytes())
    holder_vk = nacl.signing.VerifyKey(s.holder.public_key.to_bytes())
    issuer_sig, holder_sig = parsed.issuer_signature, parsed.holder_signature

    def both() -> None:
        issuer_vk.verify(sig_structure, issuer_sig)
        holder_vk.verify(message, holder_sig)

    return both


class _JwtPair:
    """The equivalent credential as two JWTs (SD-JWT style), and its verifier on pyjwt."""

    def __init__(self, s: _Setup) -> None:
        iat = int(T0.timestamp())
        salt = _b64(os.urandom(16))
        self.disclosure = _b64(json.dumps([salt, "groups", "delivery_rider"]).encode())
        other = _b64(json.dumps([_b64(os.urandom(16)), "groups", "hardship"]).encode())
        digests = sorted(
            _b64(hashlib.sha256(d.encode()).digest()) for d in (self.disclosure, other)
        )
        claims = {
            "iss": ISSUER_UNION,
            "sub": s.member,
            "iat": iat,
            "exp": iat + 365 * 86400,
            "home": HOME_UNION,
            "status": {"status_list": {"idx": 123_456, "uri": "https://ul.example/s/440000"}},
            "cnf": {"jwk": s.holder.public_key.to_jwk()},
            "_sd": digests,
            "_sd_alg": "sha-256",
        }
        header = {"kid": s.issuer.kid, "typ": "dc+sd-jwt"}
        self.issuer_jwt = jwt.encode(
            claims, s.issuer_key.to_cryptography(), algorithm="EdDSA", headers=header
        )
        presented = f"{self.issuer_jwt}~{self.disclosure}~"
        kb = {
            "iat": int(NOW.timestamp()),
            "aud": "station",
            "nonce": "",
            "sd_hash": _b64(hashlib.sha256(presented.encode()).digest()),
        }
        holder_jwt = jwt.encode(
            kb, s.holder.to_cryptography(), algorithm="EdDSA", headers={"typ": "kb+jwt"}
        )
        self.text = presented + holder_jwt
        # Pre-resolved, as ours is: kid -> key object, the status list bits.
        self.keys = {r.kid: r.public_key.to_cryptography() for r in s.trust.keyring}
        self.status = s.status[ISSUER_UNION]
        self.now = NOW

    def verify(self) -> frozenset[str]:
        issuer_jwt, *disclosures, holder_jwt = self.text.split("~")
        kid = jwt.get_unverified_header(issuer_jwt)["kid"]
        claims = jwt.decode(
            issuer_jwt,
            self.keys[kid],
            algorithms=["EdDSA"],
            leeway=30,
            options={"require": ["iss", "exp", "iat", "cnf"]},
        )
        index = claims["status"]["status_list"]["idx"]
        if self.status.status(index) or self.status.stale_reason(self.now) is not None:
            raise ValueError("revoked or stale")
        holder = ed25519.Ed25519PublicKey.from_public_bytes(
            base64.urlsafe_b64decode(claims["cnf"]["jwk"]["x"] + "==")
        )
        kb = jwt.decode(holder_jwt, holder, algorithms=["EdDSA"], audience="station")
        if abs(kb["iat"] - int(self.now.timestamp())) > 120:
            raise ValueError("stale proof")
        presented = self.text[: len(self.text) - len(holder_jwt)]
        if kb["sd_hash"] != _b64(hashlib.sha256(presented.encode()).digest()):
            raise ValueError("sd_hash")
        groups = set()
        for d in disclosures:
            if _b64(hashlib.sha256(d.encode()).digest()) not in claims["_sd"]:
                raise ValueError("bad disclosure")
            groups.add(json.loads(base64.urlsafe_b64decode(d + "=="))[2])
        return frozenset(groups)


def _version(text: str, level: int) -> int:
    code = qrcode.QRCode(error_correction=level)
    code.add_data(text)  # pyjwt text holds lower case: byte mode
    code.make(fit=True)
    return int(code.version)


TYPICAL = "TYPICAL: home 11 chars, 1 group"


def bench_sizes(s: _Setup, pair: _JwtPair) -> None:
    """Sizes with the status index 123,456 (above 65,535) and one group disclosed."""
    scenarios: list[tuple[str, dict[str, Any]]] = [
        ("home = issuer, 1 group", {"home_union": ISSUER_UNION, "groups": ["delivery_rider"]}),
        (TYPICAL, {"groups": ["delivery_rider"]}),
        ("home = issuer, 2 groups", {"home_union": ISSUER_UNION}),
        ("home 11 chars, 2 groups", {}),
    ]
    for label, change in scenarios:
        issued = issue_credential(**{**s.issue_args, **change})
        disclosure = issued.disclosures["delivery_rider"]
        text = present(issued.token, s.holder, disclosures=[disclosure], now=NOW)
        q = qr_version(text, "Q")
        goal = ""
        if label == TYPICAL:
            met = len(text) <= 410 and q <= 15
            goal = f"   goal <= 410, v15 at Q: {'met' if met else 'MISSED'}"
        print(
            f"QR, {label:<31} {len(text):>5} chars   v{q} at Q, v{qr_version(text, 'M')} at M{goal}"
        )
    text = pair.text
    q, m = qrcode.constants.ERROR_CORRECT_Q, qrcode.constants.ERROR_CORRECT_M
    print(
        f"baseline: the JWT pair, same claims  {len(text):>5} chars   v{_version(text, q)} at Q,"
        f" v{_version(text, m)} at M (byte mode)"
    )


def bench_issue(s: _Setup) -> None:
    protected = credential._PROTECTED_HEAD + credential.credential_kid(s.issuer.kid)
    payload = cbor2.loads(s.issued.token)[2]  # the claims of the benchmarked credential
    sig_structure = credential._sig_structure(
        credential._bstr(protected), credential._bstr(payload)
    )
    raw = nacl.signing.SigningKey(s.issuer_key.seed())
    report(
        "credential issuance",
        rate(lambda: issue_credential(**s.issue_args), n=2000),
        rate(lambda: raw.sign(sig_structure), n=2000),
        "raw pynacl sign",
    )


def bench_verify(s: _Setup, pair: _JwtPair) -> None:
    assert s.verify().groups == pair.verify() == {"delivery_rider"}
    ours = rate(s.verify, n=2000, repeat=7)
    raw = rate(_raw_pair(s), n=2000, repeat=7)
    via_jwt = rate(pair.verify, n=1000, repeat=5)
    report("QR verify (all 10 checks)", ours, raw, "raw 2x pynacl verify")
    report("QR verify (all 10 checks)", ours, via_jwt, "pyjwt pair, same checks")
    samples = []
    for _ in range(3000):
        start = time.perf_counter()
        s.verify()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p50, p99 = statistics.median(samples), samples[int(len(samples) * 0.99) - 1]
    print(
        f"QR verify latency                    p50 {p50:.3f} ms  p99 {p99:.3f} ms"
        f"   (goal: p99 < 5 ms; raw limit {1000 / raw:.3f} ms)"
    )


def run() -> None:
    s = _Setup()
    pair = _JwtPair(s)
    bench_sizes(s, pair)
    bench_issue(s)
    bench_verify(s, pair)


if __name__ == "__main__":
    run()
