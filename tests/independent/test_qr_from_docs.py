"""The station credential and the offline record, verified from docs/credentials.md,
docs/station.md and docs/keys.md alone: a real demo server's trust list and status list over
HTTP, a member's QR presentation (the harness plays the member's phone with the repository's
wallet), records signed by the demo station device, and the documents' worked examples; all
verified only by ``qr_verifier``."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from nacl.signing import SigningKey

import keys
from tests.independent import ledger_verifier as lv
from tests.independent import qr_verifier as qv
from tests.independent.conftest import DemoServer
from verifier.credential import IssuedCredential
from verifier.station import RecordClaims, sign_record
from verifier.wallet import Wallet

DOCS = Path(__file__).resolve().parents[2] / "docs"


def now() -> int:
    return int(time.time())


# ---------------------------------------------------------------- the harness (repository code)
@dataclass
class Outbox:
    codes: dict[str, str] = field(default_factory=dict)

    def send(self, member_id: str, phone: str, code: str) -> None:
        self.codes[phone] = code


@dataclass(frozen=True)
class Member:
    body: dict[str, Any]  # the answer of POST /v1/members/me/credential
    wallet: Wallet
    old_wallet: Wallet  # the credential the second registration superseded (revoked)


def _register(http: httpx.Client, auth: dict[str, str]) -> tuple[dict[str, Any], Wallet]:
    holder = keys.PrivateKey.generate()
    answer = http.post(
        "/v1/members/me/credential", json={"holder_key": holder.public_key.to_jwk()}, headers=auth
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    issued = IssuedCredential(
        keys.b64url_decode(body["credential"]),
        {g: keys.b64url_decode(d) for g, d in body["disclosures"].items()},
        bytes.fromhex(body["hash"]),
    )
    return body, Wallet.from_issued(holder, issued)


@pytest.fixture(scope="module")
def member(http: httpx.Client, demo_server: DemoServer) -> Member:
    """The demo's first member logs in with a one-time code and registers a holder key twice
    (the member app on a new phone): the first credential is revoked as superseded."""
    phone = demo_server.summary.member_phone
    assert phone is not None
    outbox = Outbox()
    demo_server.services.auth.sender = outbox
    assert http.post("/v1/auth/otp/request", json={"phone": phone}).status_code == 202
    deadline = time.monotonic() + 10  # the code is sent by a background task, after the answer
    while phone not in outbox.codes:
        assert time.monotonic() < deadline, "no one-time code was sent"
        time.sleep(0.01)
    login = http.post("/v1/auth/otp/verify", json={"phone": phone, "code": outbox.codes[phone]})
    assert login.status_code == 200, login.text
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    _, old_wallet = _register(http, auth)
    body, wallet = _register(http, auth)
    return Member(body, wallet, old_wallet)


def qr(wallet: Wallet, challenge: bytes | None = None, at: int | None = None) -> str:
    """The member's phone shows its QR, disclosing every group it holds."""
    when = datetime.fromtimestamp(at if at is not None else now(), UTC)
    return wallet.presentation(sorted(wallet.groups), when, challenge)


# ---------------------------------------------------------------- what a station fetches
@pytest.fixture(scope="module")
def trust(http: httpx.Client, demo_server: DemoServer) -> qv.TrustList:
    answer = http.get("/v1/trust-list")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/jwt"
    return qv.load_trust_list(answer.text, [demo_server.root_jwk], now())


def status_list_url(server: DemoServer, issuer: str) -> str:
    return f"{server.url}/v1/status-lists/{issuer}"  # cred 8.1: sub = <public URL>/v1/...


@pytest.fixture(scope="module")
def status_token(http: httpx.Client, member: Member) -> str:
    answer = http.get(f"/v1/status-lists/{member.body['issuer']}")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/statuslist+jwt"
    return answer.text


@pytest.fixture(scope="module")
def statuses(
    status_token: str, trust: qv.TrustList, member: Member, demo_server: DemoServer
) -> dict[str, qv.StatusList]:
    issuer = member.body["issuer"]
    expected = status_list_url(demo_server, issuer)
    status = qv.verify_status_list(status_token, trust, now(), expected_sub=expected)
    return {status.issuer: status}


def check(text: str, trust: qv.TrustList, statuses: dict[str, qv.StatusList], **kw: Any) -> Any:
    return qv.verify_presentation(text, trust=trust, status_lists=statuses, now=now(), **kw)


def refused(code: str, step: int, text: str, trust: qv.TrustList, statuses: Any, **kw: Any) -> None:
    arguments: dict[str, Any] = {"trust": trust, "status_lists": statuses, "now": now(), **kw}
    with pytest.raises(qv.CredentialError) as caught:
        qv.verify_presentation(text, **arguments)
    assert (caught.value.code, caught.value.step) == (code, step), caught.value


# ---------------------------------------------------------------- trust list and status list
def test_trust_list_issuer_index(trust: qv.TrustList, member: Member) -> None:
    issuers = [e for e in trust.entries if e["role"] == "issuer"]
    assert issuers
    # cred 8.1: issuer keys are drawn so that no two share a short kid.
    assert all(len(keys_) == 1 for keys_ in trust.issuers_by_short_kid.values())
    assert sum(len(k) for k in trust.issuers_by_short_kid.values()) == len(issuers)
    assert member.body["issuer"] in {e["scope"] for e in issuers}


def test_status_list_as_documented(
    status_token: str, statuses: dict[str, qv.StatusList], member: Member
) -> None:
    header, claims, _ = status_token.split(".")
    # cred 6: header and claims are canonical JSON.
    assert lv.parse_canonical(lv.b64ud(header))["typ"] == "statuslist+jwt"
    decoded = lv.parse_canonical(lv.b64ud(claims))
    assert set(decoded) == {"exp", "iat", "status_list", "sub", "ttl"}
    status = statuses[member.body["issuer"]]
    assert (status.bits, status.ttl, status.exp) == (1, 86400, status.iat + 86400)
    assert status.size >= 1024
    assert status.get(member.body["status_index"]) == 0
    old_index = qv.parse_presentation(qr(member.old_wallet)).claims[-4]
    assert status.get(old_index) == 1  # superseded: revoked


def test_status_list_refused_when_altered_or_unlisted(
    status_token: str, trust: qv.TrustList
) -> None:
    header, claims, signature = status_token.split(".")
    decoded = lv.parse_canonical(lv.b64ud(claims))
    forged_claims = lv.b64ue(lv.canonical_bytes({**decoded, "ttl": decoded["ttl"] * 30}))
    with pytest.raises(qv.StatusListError, match="status-list-bad-signature"):
        qv.verify_status_list(f"{header}.{forged_claims}.{signature}", trust, now())
    no_issuers = qv.index_trust_list(
        trust.iat, trust.exp, [e for e in trust.entries if e["role"] != "issuer"]
    )
    with pytest.raises(qv.StatusListError, match="status-list-bad-signature"):
        qv.verify_status_list(status_token, no_issuers, now())
    with pytest.raises(qv.StatusListError, match="invalid-status-list"):
        qv.verify_status_list(status_token, trust, now(), expected_sub="https://elsewhere/x")
    with pytest.raises(qv.StatusListError, match="status-list-expired"):
        qv.verify_status_list(status_token, trust, decoded["exp"])


# ---------------------------------------------------------------- the member's presentation
def test_member_presentation_passes_all_ten_checks(
    trust: qv.TrustList, statuses: dict[str, qv.StatusList], member: Member
) -> None:
    text = qr(member.wallet)
    assert text.startswith("UL1:")
    verified = check(text, trust, statuses)
    body = member.body
    assert verified.member_id == body["member_id"]
    assert verified.issuer_union == body["issuer"]
    assert verified.home_union == body["union"]
    assert verified.status_index == body["status_index"]
    assert verified.credential_hash.hex() == body["hash"]
    assert sorted(verified.groups) == sorted(body["disclosures"])
    issued = datetime.fromisoformat(body["iat"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(body["exp"].replace("Z", "+00:00"))
    assert verified.exp == int(expires.timestamp())
    assert qv.parse_presentation(text).claims[6] == int(issued.timestamp())
    assert expires - issued == timedelta(days=30)  # cred 8.1: valid for 30 days from issue
    renew = datetime.fromisoformat(body["renew_after"].replace("Z", "+00:00"))
    assert expires - renew == timedelta(days=7)
    raw = qv.b45_decode(text[4:])
    assert verified.presentation_hash == hashlib.sha256(raw).digest()
    # With a station's challenge (cred 3.5, step 9).
    challenged = qr(member.wallet, challenge=b"station-nonce-1")
    assert check(challenged, trust, statuses, challenge=b"station-nonce-1").groups
    refused("challenge-mismatch", 9, challenged, trust, statuses, challenge=b"station-nonce-2")
    refused("challenge-mismatch", 9, text, trust, statuses, challenge=b"station-nonce-1")
    # Nothing disclosed is a valid presentation too.
    hidden = member.wallet.presentation([], datetime.now(UTC))
    assert check(hidden, trust, statuses).groups == []


def test_stale_and_expired_presentations_are_refused(
    trust: qv.TrustList, statuses: dict[str, qv.StatusList], member: Member
) -> None:
    text = qr(member.wallet)
    # step 8: an old screenshot (max_proof_age 90 s + leeway 30 s).
    refused("holder-proof-stale", 8, qr(member.wallet, at=now() - 200), trust, statuses)
    refused("holder-proof-stale", 8, text, trust, statuses, now=now() + 200)
    # step 6: a status list older than its ttl.
    day_later = now() + 86400 + 60
    refused("status-list-stale", 6, text, trust, statuses, now=day_later)
    # step 5: past the credential's exp (a trust list still in force then, for the test).
    exp = qv.parse_presentation(text).claims[4]
    later_trust = qv.index_trust_list(trust.iat, exp + 10**6, trust.entries)
    refused("credential-expired", 5, text, later_trust, statuses, now=exp + 31)
    # step 3: the station's trust list itself has expired.
    refused("credential-unknown-issuer", 3, text, trust, statuses, now=trust.exp + 31)


def test_revoked_credential_is_refused(
    trust: qv.TrustList, statuses: dict[str, qv.StatusList], member: Member
) -> None:
    refused("credential-revoked", 6, qr(member.old_wallet), trust, statuses)


def test_unknown_issuer_and_missing_status_list(
    trust: qv.TrustList, statuses: dict[str, qv.StatusList], member: Member
) -> None:
    text = qr(member.wallet)
    issuer = member.body["issuer"]
    without = qv.index_trust_list(
        trust.iat,
        trust.exp,
        [e for e in trust.entries if not (e["role"] == "issuer" and e["scope"] == issuer)],
    )
    refused("credential-unknown-issuer", 3, text, without, statuses)
    refused("status-list-missing", 6, text, trust, {})
    elsewhere = {issuer: replace(statuses[issuer], issuer="someone-else")}
    refused("status-list-missing", 6, text, trust, elsewhere)


def test_every_altered_byte_and_character_is_refused(
    trust: qv.TrustList, statuses: dict[str, qv.StatusList], member: Member
) -> None:
    text = qr(member.wallet)
    raw = qv.b45_decode(text[4:])
    assert "UL1:" + qv.b45_encode(raw) == text
    for i in range(len(raw)):
        altered = bytearray(raw)
        altered[i] ^= 0x01
        with pytest.raises(qv.CredentialError):
            check("UL1:" + qv.b45_encode(bytes(altered)), trust, statuses)
    for i in range(4, len(text)):
        other = qv.B45[(qv.B45.index(text[i]) + 1) % 45]
        with pytest.raises(qv.CredentialError):
            check(text[:i] + other + text[i + 1 :], trust, statuses)
    for bad in ("UL2:" + text[4:], text.lower(), text + "0", text[:-1], text + "\n", "UL1:"):
        with pytest.raises(qv.CredentialError):
            check(bad, trust, statuses)


def test_forged_holder_proof_and_foreign_disclosure(
    trust: qv.TrustList, statuses: dict[str, qv.StatusList], member: Member
) -> None:
    text = qr(member.wallet)
    p = qv.parse_presentation(text)
    credential_hash = hashlib.sha256(p.credential_bytes).digest()

    def rebuild(disclosures: list[bytes], signer: SigningKey) -> str:
        message = qv.holder_message(credential_hash, p.proof_time, None, disclosures)
        signature = signer.sign(message).signature
        raw = bytes([0x83 + len(disclosures)]) + p.credential_bytes
        raw += qv.cbor_head(0, p.proof_time) + qv.cbor_bstr(signature)
        raw += b"".join(qv.cbor_bstr(d) for d in disclosures)
        return "UL1:" + qv.b45_encode(raw)

    thief = SigningKey.generate()
    refused("holder-proof-invalid", 7, rebuild(p.disclosures, thief), trust, statuses)
    holder = SigningKey(member.wallet._holder_key.seed())  # the phone's own key (harness)
    assert check(rebuild(p.disclosures, holder), trust, statuses)  # the rebuild is faithful
    assert p.disclosures, "the demo member should hold at least one group"
    refused("bad-disclosure", 10, rebuild(p.disclosures * 2, holder), trust, statuses)
    # A disclosure of another credential (the superseded one) cannot be added, even by the
    # holder: its digest is not in this credential.
    foreign = qv.parse_presentation(qr(member.old_wallet)).disclosures
    refused("bad-disclosure", 10, rebuild([*p.disclosures, foreign[0]], holder), trust, statuses)
    # Stripping a disclosure in transit breaks the holder's signature.
    stripped = "UL1:" + qv.b45_encode(
        bytes([0x83 + len(p.disclosures) - 1]) + p.raw[1 : len(p.raw) - 16]
    )
    refused("holder-proof-invalid", 7, stripped, trust, statuses)


# ---------------------------------------------------------------- credentials.md 4 example
def _doc_example() -> tuple[str, str]:
    text = (DOCS / "credentials.md").read_text(encoding="utf-8")
    example = text.split("<!-- generated: worked-example -->")[1].split("<!-- end:")[0]
    qr_text = re.search(r"The QR text \(\d+ characters.*?```\n(UL1:[^\n]+)\n```", example, re.S)
    assert qr_text is not None, "credentials.md section 4 moved"
    return qr_text.group(1), example


def _doc_hex(example: str, title: str) -> str:
    found = re.search(re.escape(title) + r".*?```\n([0-9a-f\n]+)```", example, re.S)
    assert found is not None, title
    return found.group(1).replace("\n", "")


def test_credentials_worked_example() -> None:
    text, example = _doc_example()
    assert len(text) == 424
    p = qv.parse_presentation(text)
    issuer = SigningKey(bytes(range(32)))
    x = lv.b64ue(bytes(issuer.verify_key))
    kid = lv.jwk_thumbprint(x)
    assert kid == "1IG2tMH7J2wbJZnOf8LJzQitKf7LMvoAElsuDMVM54Y"
    assert bytes(p.protected[5:9]).hex() == "d481b6b4"
    nbf = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    entry = {"kid": kid, "x": x, "role": "issuer", "scope": "440000", "nbf": nbf}
    at = int(datetime(2026, 5, 1, 8, 30, 10, tzinfo=UTC).timestamp())
    trust = qv.index_trust_list(at - 60, at + 86400, [entry])
    status = qv.StatusList("440000", at - 60, at + 86400, 86400, 1, bytes(200_000 // 8), "u")
    verified = qv.verify_presentation(text, trust=trust, status_lists={"440000": status}, now=at)
    assert (verified.member_id, verified.home_union, verified.issuer_union) == (
        "AAECAwQFBgcICQoLDA0ODw",
        "440106-0012",
        "440000",
    )
    assert (verified.groups, verified.status_index) == (["delivery_rider"], 123456)
    assert verified.holder_key == bytes(SigningKey(bytes(range(32, 64))).verify_key)
    assert len(p.raw) == 280
    assert len(p.credential_bytes) == 192
    assert verified.credential_hash.hex() == _doc_hex(example, "The credential hash")
    protected = p.raw[p.protected.item_start : p.protected.item_end]
    payload = p.raw[p.payload.item_start : p.payload.item_end]
    sig_structure = b"\x84\x6aSignature1" + protected + b"\x40" + payload
    assert sig_structure.hex() == _doc_hex(example, "Sig_structure")
    message = qv.holder_message(verified.credential_hash, p.proof_time, None, p.disclosures)
    assert message.hex() == _doc_hex(example, "The holder message")
    for disclosure in ("824ca0a1a2a3a4a5a6a7a8a9aaab01", "824cb0b1b2b3b4b5b6b7b8b9babb07"):
        digest = qv.disclosure_digest(bytes.fromhex(disclosure)).hex()
        assert f"| {disclosure} | {digest} |" in example
    # The example's issuer key revoked before its iat: refused at step 3.
    revoked = qv.index_trust_list(at - 60, at + 86400, [{**entry, "revoked": nbf + 1}])
    with pytest.raises(qv.CredentialError, match="key-revoked"):
        qv.verify_presentation(text, trust=revoked, status_lists={"440000": status}, now=at)


# ---------------------------------------------------------------- offline records (station.md)
def _doc_records() -> tuple[list[str], list[str], list[str]]:
    doc = (DOCS / "station.md").read_text(encoding="utf-8")
    example = doc.split("<!-- generated: record-example -->")[1].split("<!-- end:")[0]
    tokens = [
        re.sub(r"\s+", "", t)
        for t in re.findall(r"The token \(\d+ characters.*?\n\n```\n(.*?)```", example, re.S)
    ]
    hashes = re.findall(r"base64url\(SHA-256\(token\)\):\n\n```\n(\S+)\n```", example)
    claims = re.findall(r"Claims \(canonical JSON\):\n\n```\n(.*?)\n```", example)
    assert len(tokens) == len(hashes) == len(claims) == 2, "station.md 2.3 moved"
    return tokens, hashes, claims


def test_station_record_worked_example() -> None:
    tokens, hashes, claims = _doc_records()
    device = SigningKey(bytes(range(32)))
    x = lv.b64ue(bytes(device.verify_key))
    kid = lv.jwk_thumbprint(x)
    station = "ST-BJ-0001"
    registry = {kid: {"kid": kid, "x": x, "role": "station", "scope": station, "nbf": 1800000000}}
    at = 1815634000
    for token, digest, claim_text in zip(tokens, hashes, claims, strict=True):
        _, got = qv.verify_record(token, registry, expected_station=station, now=at)
        assert qv.record_hash(token) == digest
        assert lv.canonical_bytes(got).decode() == claim_text
    # station 2.2: the same claims and key always give the same token.
    header = lv.b64ue(lv.canonical_bytes({"alg": "EdDSA", "kid": kid, "typ": "ul-offline+jwt"}))
    body = lv.b64ue(claims[0].encode())
    signature = lv.b64ue(device.sign(f"{header}.{body}".encode()).signature)
    assert f"{header}.{body}.{signature}" == tokens[0]

    def batch(records: list[str]) -> tuple[int, str | None]:
        kept, failure = qv.verify_batch(
            records, 0, qv.GENESIS, station_keys=registry, expected_station=station, now=at
        )
        return len(kept), failure[1].code if failure else None

    assert batch(tokens) == (2, None)
    assert batch(tokens[::-1]) == (0, "record-reordered")
    assert batch(tokens[1:]) == (0, "record-gap")
    assert batch([tokens[0], tokens[0]]) == (1, "record-duplicate")
    altered = tokens[0][:-5] + ("A" if tokens[0][-5] != "A" else "B") + tokens[0][-4:]
    failures = {
        "record-bad-signature": (altered, station, at),
        "record-unknown-key": (tokens[0], "ST-BJ-0002", at),
        "record-clock-skew": (tokens[0], station, at - 2000),
    }
    for code, (token, expected, when) in failures.items():
        with pytest.raises(qv.RecordError) as caught:
            qv.verify_record(token, registry, expected_station=expected, now=when)
        assert caught.value.code == code
    late = {kid: {**registry[kid], "revoked": 1815633000}}
    with pytest.raises(qv.RecordError, match="record-key-revoked"):
        qv.verify_record(tokens[0], late, expected_station=station, now=at)


def test_demo_station_records_verify_with_the_trust_list(
    demo_server: DemoServer,
    trust: qv.TrustList,
    statuses: dict[str, qv.StatusList],
    member: Member,
) -> None:
    """The demo station device signs records of real presentations (harness: the device's own
    code); a verifier judges them with the station keys of the server's trust list."""
    station = demo_server.demo_station
    device = demo_server.demo_station_key()
    station_keys = {
        e["kid"]: e for e in trust.entries if e["role"] == "station" and e["scope"] == station
    }
    assert device.key_id in station_keys
    t = max(now() - 100, station_keys[device.key_id]["nbf"])  # the device key was just made
    tokens: list[str] = []
    previous = qv.GENESIS
    for seq in (1, 2, 3):
        verified = check(qr(member.wallet, challenge=bytes([seq])), trust, statuses)
        claims = RecordClaims(
            station=station,
            seq=seq,
            prev=previous,
            program="NAT-WATER",
            version=1,
            quantity=seq,
            value=100 * seq,
            presentation=lv.b64ue(verified.presentation_hash),
            member=verified.member_id,
            home=verified.home_union,
            iat=t + seq,
            clk=t + seq,
        )
        token = sign_record(claims, device).token
        tokens.append(token)
        previous = qv.record_hash(token)

    def batch(records: list[str], seq: int = 0, head: str = qv.GENESIS) -> tuple[int, str | None]:
        kept, failure = qv.verify_batch(
            records, seq, head, station_keys=station_keys, expected_station=station, now=now()
        )
        return len(kept), failure[1].code if failure else None

    assert batch(tokens) == (3, None)
    assert batch(tokens[2:], 2, qv.record_hash(tokens[1])) == (1, None)
    assert batch([tokens[0], tokens[2]]) == (1, "record-gap")
    assert batch([tokens[0], tokens[0]]) == (1, "record-duplicate")
    assert batch(tokens[1:], 1, qv.record_hash(tokens[1])) == (0, "record-chain-broken")
    replay = RecordClaims(**{**_claims_of(tokens[0]), "seq": 4, "prev": qv.record_hash(tokens[2])})
    assert batch([*tokens, sign_record(replay, device).token]) == (
        3,
        "record-presentation-replayed",
    )
    # station 2.4 check 2: the kid names no station key of another station.
    with pytest.raises(qv.RecordError, match="record-unknown-key"):
        qv.verify_record(tokens[0], station_keys, expected_station="ST-OTHER", now=now())
    # check 4: a record of this device that names another station.
    other = RecordClaims(**{**_claims_of(tokens[0]), "station": "ST-OTHER"})
    with pytest.raises(qv.RecordError, match="record-wrong-station"):
        qv.verify_record(
            sign_record(other, device).token, station_keys, expected_station=station, now=now()
        )


def _claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = lv.parse_canonical(lv.b64ud(token.split(".")[1]))
    return claims
