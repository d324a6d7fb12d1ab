"""Station credentials and QR presentations: round trip, the wire layout, each numbered check's
own error, tampering, fuzzing, sizes and QR rendering."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import base45
import cbor2
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import keys
from keys import Keyring, PrivateKey, Role, sign_trust_list, verify_trust_list
from verifier import credential as cred
from verifier.credential import (
    DIGEST_SIZE,
    GROUP_CODES,
    KID_SIZE,
    PREFIX,
    SALT_SIZE,
    IssuedCredential,
    VerifiedPresentation,
    b45decode,
    b45encode,
    decode_credential,
    issue_credential,
    present,
    verify_presentation,
)
from verifier.errors import (
    BadDisclosure,
    ChallengeMismatch,
    CredentialError,
    CredentialExpired,
    CredentialMalformed,
    CredentialNotYetValid,
    CredentialRevoked,
    CredentialSignatureInvalid,
    HolderProofInvalid,
    HolderProofStale,
    StatusIndexOutOfRange,
    StatusListMissing,
    StatusListStale,
    UnknownIssuer,
    VerifierError,
)
from verifier.statuslist import StatusList, VerifiedStatusList, sign_status_list, verify_status_list
from verifier.wallet import QR_ALPHANUMERIC, Wallet, qr_matrix, qr_png, qr_version

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
ISSUED = T0 + 100 * DAY  # the credential's iat
NOW = T0 + 120 * DAY  # the station's clock
PROVINCE, HOME = "440000", "440106-0012"
MEMBER = "AAECAwQFBgcICQoLDA0ODw"  # the base64url of bytes 0..15


def seeded(label: str) -> PrivateKey:
    return PrivateKey.from_seed(hashlib.sha256(label.encode()).digest())


def counter_rng() -> Callable[[int], bytes]:
    state = [0]

    def rng(n: int) -> bytes:
        state[0] += 1
        return hashlib.sha256(b"salt %d" % state[0]).digest()[:n]

    return rng


class World:
    """A keyring with issuer keys of several unions (current, next, expired, revoked), its
    verified trust list, a status list, and a holder."""

    def __init__(self) -> None:
        r = Keyring()
        r, _ = r.rotate(Role.ROOT, T0, new_key=seeded("root"))
        r, self.issuer_rec = r.rotate(Role.ISSUER, T0, scope=PROVINCE, new_key=seeded("issuer"))
        # The next key of the same union: published now, valid from T0 + 130 days.
        r, self.next_rec = r.rotate(Role.ISSUER, T0 + 100 * DAY, scope=PROVINCE)
        r, self.other_rec = r.rotate(Role.ISSUER, T0, scope="110000")
        r, self.revoked_rec = r.rotate(Role.ISSUER, T0, scope="120000")
        r = r.revoke(self.revoked_rec.kid, T0 + 50 * DAY, "compromised")
        r, self.station_rec = r.rotate(Role.STATION, T0, scope="ST-1")
        self.ring = r
        token = sign_trust_list(r, T0 + 119 * DAY, ttl=1000 * DAY)
        self.trust = verify_trust_list(token, r.current(Role.ROOT, T0).public_key, NOW)
        self.holder = seeded("holder")
        self.status = StatusList(100_000)

    def key(self, record: keys.KeyRecord) -> PrivateKey:
        return self.ring.private_key(record.kid)

    def issue(self, **overrides: Any) -> IssuedCredential:
        args: dict[str, Any] = {
            "issuer_key": self.key(self.issuer_rec),
            "issuer": self.issuer_rec,
            "member_id": MEMBER,
            "home_union": HOME,
            "holder_public_key": self.holder.public_key,
            "groups": ["delivery_rider", "hardship"],
            "status_index": 1234,
            "issued_at": ISSUED,
            "expires_at": ISSUED + 365 * DAY,
            "rng": counter_rng(),
        }
        args.update(overrides)
        return issue_credential(**args)

    def issue_by(self, record: keys.KeyRecord, **overrides: Any) -> IssuedCredential:
        """A credential signed by ``record``'s key (whatever its role: see ``as_issuer``)."""
        key = self.key(record)
        return self.issue(issuer_key=key, issuer=as_issuer(record), **overrides)

    def status_lists(
        self,
        *,
        signed_at: datetime = NOW - timedelta(hours=1),
        ttl: timedelta = DAY,
        record: keys.KeyRecord | None = None,
        bits: StatusList | None = None,
        lifetime: timedelta | None = None,
    ) -> dict[str, VerifiedStatusList]:
        """Union 440000's list (signed by whichever of its keys is current then)."""
        record = record or self.ring.current(Role.ISSUER, signed_at, scope=PROVINCE)
        token = sign_status_list(
            bits or self.status,
            uri=f"https://ul.example/status/{record.scope}",
            issuer_key=self.key(record),
            kid=record.kid,
            now=signed_at,
            ttl=ttl,
            lifetime=lifetime,
        )
        verified = verify_status_list(token, self.trust, signed_at)
        return {PROVINCE: verified}

    def verify(self, text: str, **overrides: Any) -> VerifiedPresentation:
        args: dict[str, Any] = {
            "trust_list": self.trust,
            "status_lists": self.status_lists(),
            "now": NOW,
        }
        args.update(overrides)
        return verify_presentation(text, **args)


def as_issuer(record: keys.KeyRecord) -> keys.KeyRecord:
    """``record`` as if it were an issuer key's (issue_credential refuses any other role): for
    credentials signed by a station's key, which a verifier must refuse."""
    if record.role is Role.ISSUER:
        return record
    return dataclasses.replace(record, role=Role.ISSUER)


def stranger_record(key: PrivateKey, scope: str = PROVINCE) -> keys.KeyRecord:
    """An issuer key record that no trust list holds."""
    return keys.KeyRecord(
        kid=key.key_id, role=Role.ISSUER, public_key=key.public_key, not_before=T0, scope=scope
    )


W = World()
GOOD = W.issue()
GOOD_TEXT = present(GOOD.token, W.holder, disclosures=[GOOD.disclosures["delivery_rider"]], now=NOW)
STATUS = W.status_lists()


def fast_verify(text: str, **overrides: Any) -> VerifiedPresentation:
    """verify with the module's status lists (signing one per call is slow in property tests)."""
    return W.verify(text, **{"status_lists": STATUS, **overrides})


# -- helpers that take a presentation apart and put it together again -------------------------


def items_of(text: str) -> list[Any]:
    return cbor2.loads(b45decode(text[len(PREFIX) :]))  # type: ignore[no-any-return]


def text_of(items: list[Any]) -> str:
    return PREFIX + b45encode(cbor2.dumps(items))


def resign(items: list[Any], holder: PrivateKey) -> list[Any]:
    """The same presentation with a fresh holder signature by ``holder`` over its content."""
    credential = cbor2.dumps(items[0])
    proof_time, challenge = items[1] if isinstance(items[1], list) else (items[1], None)
    message = cred._holder_message(
        hashlib.sha256(credential).digest(), proof_time, challenge, items[3:]
    )
    return [items[0], items[1], holder.sign(message), *items[3:]]


def with_claims(items: list[Any], **changes: Any) -> list[Any]:
    """The presentation with its credential's claims changed (issuer signature left stale)."""
    claims = cbor2.loads(items[0][2])
    labels = {
        "iss": 1,
        "exp": 4,
        "iat": 6,
        "member": -1,
        "holder": -2,
        "home": -3,
        "status": -4,
        "groups": -5,
    }
    for name, value in changes.items():
        claims[labels[name]] = value
    cose = [items[0][0], {}, cbor2.dumps(claims, canonical=True), items[0][3]]
    return [cose, *items[1:]]


# -- round trip and layout ---------------------------------------------------------------------


def test_round_trip() -> None:
    v = fast_verify(GOOD_TEXT)
    assert v.member_id == MEMBER
    assert (v.home_union, v.issuer_union) == (HOME, PROVINCE)
    assert v.groups == frozenset({"delivery_rider"})  # hardship stays hidden
    assert v.expires_at == ISSUED + 365 * DAY
    assert v.holder_key == W.holder.public_key
    assert v.credential_hash == GOOD.credential_hash == hashlib.sha256(GOOD.token).digest()
    assert v.presentation_hash == hashlib.sha256(b45decode(GOOD_TEXT[4:])).digest()
    assert v.status_index == 1234
    assert v.proof_time == int(NOW.timestamp())


def test_every_group_and_none() -> None:
    both = present(GOOD.token, W.holder, disclosures=list(GOOD.disclosures.values()), now=NOW)
    assert fast_verify(both).groups == {"delivery_rider", "hardship"}
    assert fast_verify(present(GOOD.token, W.holder, disclosures=[], now=NOW)).groups == set()
    plain = W.issue(groups=[], home_union=PROVINCE)
    v = fast_verify(present(plain.token, W.holder, disclosures=[], now=NOW))
    assert (v.home_union, v.groups) == (PROVINCE, frozenset())


def test_every_ledger_group_has_a_one_byte_code() -> None:
    """A new ledger group still works without a code (it travels by name, several bytes more),
    but should get the next code: this test is the reminder. Codes never change."""
    from ledger.members import Group

    assert set(GROUP_CODES) == {g.value for g in Group}
    assert sorted(GROUP_CODES.values()) == list(range(1, len(GROUP_CODES) + 1))
    assert max(GROUP_CODES.values()) < 24  # one CBOR byte


def test_a_group_without_a_code_travels_by_name() -> None:
    issued = W.issue(groups=["night_shift", "courier"])
    assert cbor2.loads(issued.disclosures["night_shift"])[1] == "night_shift"
    assert cbor2.loads(issued.disclosures["courier"])[1] == GROUP_CODES["courier"]
    text = present(issued.token, W.holder, disclosures=list(issued.disclosures.values()), now=NOW)
    assert fast_verify(text).groups == {"night_shift", "courier"}


# A known answer: fixed keys, salts and times give these exact characters (Ed25519 is
# deterministic). Any change to the layout, the labels or the signed bytes changes it.
KNOWN_ANSWER = (
    "UL1:"
    "*XG+D9P60CO0+:3YZH8CKM:DFN0%RDMQOWY07HDN3I$34100KB0*M0DY0W016C1PN1:Y1V94+64CQN7GEV10D-3SPK"
    "$-9N3II$JY+B:.LB0C68N6OL.AC4K6X5W*OD+Q6$969%6646*96UJ4JR0YQ4L238-SPL6GCK3:BLC4$EK5P6JPJOGS"
    "/67.H7S+KD880+O/5BEYAZ29%8I$*90 AOGT7I00P22-ME/K5$2LP6Q+5AWNQKCS.EAKK8EJDQ5FCAP:7M.D6/RUN8"
    "OXV DJ-Q16HKS+LQ00XHDC/T27BFBQ6VMPA1+G2DR0P0QW42W CBQ0N4PL*F206-SO37C*-1K SF:HV30%0RRL6C-H"
    "G6D0RM13J*%R 09PISFTH+SKL7N9M21C1E2AVV943LLMAIUNQ7IDE1+AL"
)


def test_known_answer() -> None:
    issued = W.issue(expires_at=datetime(2027, 4, 11, tzinfo=UTC))
    text = present(issued.token, W.holder, disclosures=[issued.disclosures["hardship"]], now=NOW)
    assert text == KNOWN_ANSWER
    assert fast_verify(text).groups == {"hardship"}


def test_the_bytes_are_the_documented_layout() -> None:
    data = b45decode(GOOD_TEXT[4:])
    kid = cred.credential_kid(W.issuer_rec.kid)
    assert kid == keys.b64url_decode(W.issuer_rec.kid)[:4]  # the thumbprint's first 4 bytes
    assert data[:13] == bytes.fromhex("84 84 49 a2 01 27 04 44") + kid + b"\xa0"
    items = items_of(GOOD_TEXT)
    protected, unprotected, payload, signature = items[0]
    assert cbor2.loads(protected) == {1: -8, 4: kid}
    assert unprotected == {}
    claims = cbor2.loads(payload)
    assert list(claims) == [4, 6, -1, -2, -3, -4, -5]  # no iss: the kid names the issuer
    assert cbor2.dumps(claims, canonical=True) == payload  # deterministic encoding
    assert claims[-3] == HOME
    assert claims[-4] == 1234
    assert claims[-1] == bytes(range(16))
    assert claims[-2] == W.holder.public_key.to_bytes()
    assert len(claims[-5]) == 2 * DIGEST_SIZE
    digests = [claims[-5][i : i + DIGEST_SIZE] for i in range(0, len(claims[-5]), DIGEST_SIZE)]
    assert digests == sorted(digests)
    # The credential is embedded verbatim, and is the canonical COSE_Sign1 of its parts.
    assert (
        GOOD.token
        == cbor2.dumps([protected, {}, payload, signature])
        == data[1 : 1 + len(GOOD.token)]
    )
    sig_structure = cbor2.dumps(["Signature1", protected, b"", payload])
    W.key(W.issuer_rec).public_key.verify(signature, sig_structure)  # any COSE library's check
    assert items[1] == int(NOW.timestamp())
    assert len(items[2]) == 64
    salt, group = cbor2.loads(items[3])
    assert len(salt) == SALT_SIZE
    assert group == GROUP_CODES["delivery_rider"]
    assert len(items) == 4


@pytest.mark.parametrize("challenge", [None, b"", b"\x00" * 40])
@pytest.mark.parametrize("count", [0, 1, 3, 25])
def test_holder_message_is_the_cbor_it_claims(challenge: bytes | None, count: int) -> None:
    disclosures = [bytes([i]) * (i * 7) for i in range(count)]
    for proof_time in (0, 23, 24, 255, 256, 2**16, 2**32, cred.MAX_TIME):
        expected = cbor2.dumps(
            [cred.HOLDER_PROOF_CONTEXT, b"h" * 32, proof_time, challenge, disclosures]
        )
        assert cred._holder_message(b"h" * 32, proof_time, challenge, disclosures) == expected


def test_decode_credential_and_wallet() -> None:
    claims = decode_credential(GOOD.token)
    assert (claims.home_union, claims.member_id) == (HOME, MEMBER)
    assert claims.kid == cred.credential_kid(W.issuer_rec.kid)
    assert decode_credential(W.issue(home_union=PROVINCE).token).home_union is None  # = issuer's
    wallet = Wallet.from_issued(W.holder, GOOD)
    assert wallet.groups == {"delivery_rider", "hardship"}
    universal = wallet.presentation([], NOW)
    assert fast_verify(universal).groups == set()
    targeted = wallet.presentation(["hardship", "truck_driver"], NOW)
    assert fast_verify(targeted).groups == {"hardship"}
    with pytest.raises(ValueError, match="holder key"):
        Wallet(PrivateKey.generate(), GOOD.token, GOOD.disclosures)
    with pytest.raises(ValueError, match="holder key"):
        present(GOOD.token, PrivateKey.generate(), disclosures=[], now=NOW)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"issuer": W.other_rec}, "not the record of issuer_key"),
        ({"issuer": W.station_rec}, "role issuer"),
        ({"issuer": W.issuer_rec.kid}, "role issuer"),
        ({"home_union": ""}, "home_union"),
        ({"member_id": "AAECAwQFBgcICQoLDA0ODw8"}, "member_id"),
        ({"groups": ["courier", "courier"]}, "distinct"),
        ({"groups": ["Hardship"]}, "group"),
        ({"status_index": -1}, "status_index"),
        ({"status_index": 2**32}, "status_index"),
        ({"expires_at": ISSUED}, "later"),
        ({"issued_at": datetime(2026, 1, 1)}, "aware"),
        ({"rng": lambda n: b"short"}, "rng"),
    ],
)
def test_issue_refuses_bad_input(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        W.issue(**change)


# -- each numbered check's failure gives its own error -----------------------------------------


def test_step_1_prefix_and_version() -> None:
    for text in ("", "UL1", GOOD_TEXT[4:], "ul1:" + GOOD_TEXT[4:], "HC1:" + GOOD_TEXT[4:]):
        with pytest.raises(CredentialMalformed, match="prefix"):
            fast_verify(text)
    with pytest.raises(CredentialMalformed, match="UL2 is not supported"):
        fast_verify("UL2:" + GOOD_TEXT[4:])


@pytest.mark.parametrize(
    "text",
    [
        PREFIX + "abc",  # lowercase is not base45
        PREFIX + "ABCD",  # a dangling character
        PREFIX + "GGW",  # 65536 does not fit two bytes
        PREFIX + ":::",
        PREFIX,
        PREFIX + b45encode(b"\x84"),
        PREFIX + b45encode(b"\x83\x84\x40\xa0\x40\x40\x00\x40"),
        PREFIX + b45encode(cbor2.dumps(["not", "a", "presentation"])),
        GOOD_TEXT + "00",  # trailing bytes
        GOOD_TEXT[:-3],  # truncated
        PREFIX + b45encode(b"\xd2" + b45decode(GOOD_TEXT[4:])),  # tag 18 on the array
        PREFIX + "A" * 5000,
        GOOD_TEXT + "\n",
        GOOD_TEXT.replace("UL1:", "UL1: "),
        "UL1:０１２",  # fullwidth digits
    ],
)
def test_step_2_decoding(text: str) -> None:
    with pytest.raises(CredentialMalformed):
        fast_verify(text)


def test_step_2_refuses_other_encodings_of_the_same_content() -> None:
    data = b45decode(GOOD_TEXT[4:])
    time_at = 1 + len(GOOD.token)
    assert data[time_at] == 0x1A  # the proof time's head
    longer_time = data[:time_at] + b"\x1b\x00\x00\x00\x00" + data[time_at + 1 :]
    assert cbor2.loads(longer_time) == cbor2.loads(data)  # same content, another encoding
    tagged = data[:1] + b"\xd2" + data[1:]  # tag 18 on the credential
    for variant in (longer_time, tagged, data + b"\x00"):
        with pytest.raises(CredentialMalformed):
            fast_verify(PREFIX + b45encode(variant))


@pytest.mark.parametrize(
    "items_change",
    [
        lambda i: [[i[0][0], {4: b"k"}, i[0][2], i[0][3]], *i[1:]],  # an unprotected header
        lambda i: [[i[0][0][:-1], {}, i[0][2], i[0][3]], *i[1:]],  # a 3-byte kid
        lambda i: [[i[0][0] + b"\0", {}, i[0][2], i[0][3]], *i[1:]],  # a 5-byte kid
        lambda i: [[cbor2.dumps({1: -8}), {}, i[0][2], i[0][3]], *i[1:]],  # no kid
        lambda i: [[cbor2.dumps({1: -7, 4: i[0][0][5:]}), {}, i[0][2], i[0][3]], *i[1:]],  # ES256
        lambda i: [[i[0][0], {}, i[0][2], i[0][3][:63]], *i[1:]],
        lambda i: [i[0], -1, *i[2:]],  # a time before 1970
        lambda i: [i[0], [i[1], "text"], *i[2:]],
        lambda i: [i[0], 1.5, *i[2:]],
        lambda i: [i[0], i[1], i[2][:63], *i[3:]],
        lambda i: [i[0], i[1], i[2], "not bytes"],
        lambda i: with_claims(i, iss=PROVINCE),  # version 1 has no iss (label 1)
        lambda i: with_claims(i, iss=440000),
        lambda i: with_claims(i, home=PROVINCE),  # home is only sent when not the issuer's
        lambda i: with_claims(i, home=None),
        lambda i: with_claims(i, home=440106),
        lambda i: with_claims(i, exp=ISSUED.timestamp()),  # a float
        lambda i: with_claims(i, member=b"short"),
        lambda i: with_claims(i, holder=b"\x00" * 31),
        lambda i: with_claims(i, status=-5),
        lambda i: with_claims(i, groups=b"\x00" * 13),
        lambda i: with_claims(i, groups=b""),
        lambda i: with_claims(i, iat=int((ISSUED + 400 * DAY).timestamp())),  # after exp
        lambda i: [[i[0][0], {}, i[0][2] + b"\x00", i[0][3]], *i[1:]],  # trailing claim bytes?
    ],
)
def test_step_2_structure(items_change: Callable[[list[Any]], list[Any]]) -> None:
    items = items_change(items_of(GOOD_TEXT))
    text = text_of(items)
    try:
        fast_verify(text)
    except CredentialMalformed:
        return
    except CredentialSignatureInvalid:
        # Trailing bytes after the claims map are inside the issuer's signed payload: the
        # decoder does not look at them, but the signature covers them.
        assert items[0][2].endswith(b"\x00")
        return
    pytest.fail("accepted")


def test_step_2_unknown_and_duplicate_claims() -> None:
    items = items_of(GOOD_TEXT)
    claims = cbor2.loads(items[0][2])
    unknown = cbor2.dumps({**claims, -6: 1}, canonical=True)
    # A label twice: cbor2 would keep the last; the map head then counts one label too many.
    twice = b"\xa9" + items[0][2][1:] + b"\x01\x63\x31\x32\x33"
    out_of_order = cbor2.dumps(dict(reversed(claims.items())))
    for payload in (unknown, twice, out_of_order):
        with pytest.raises(CredentialMalformed):
            fast_verify(text_of([[items[0][0], {}, payload, items[0][3]], *items[1:]]))


def test_step_3_unknown_issuer() -> None:
    stranger = PrivateKey.generate()
    cases = [
        ("no issuer key", W.issue(issuer_key=stranger, issuer=stranger_record(stranger))),
        # A station's key never issues credentials: its short kid is not even looked up.
        ("no issuer key", W.issue_by(W.station_rec)),
        ("key-not-yet-valid", W.issue_by(W.next_rec, issued_at=NOW)),  # before its window
        ("key-expired", W.issue(issued_at=T0 + 131 * DAY)),  # the old key after hand-over
        ("key-revoked", W.issue_by(W.revoked_rec, issued_at=T0 + 60 * DAY)),
    ]
    for why, issued in cases:
        text = present(issued.token, W.holder, disclosures=[], now=NOW)
        with pytest.raises(UnknownIssuer, match=why):
            fast_verify(text, now=max(NOW, T0 + 132 * DAY))


def test_step_3_the_issuer_union_is_the_signing_key_s_scope() -> None:
    """The credential names no issuer: 110000's key issues for 110000, and the station checks
    110000's status list, whatever the credential's home union."""
    issued = W.issue_by(W.other_rec, home_union="110000")
    assert decode_credential(issued.token).home_union is None  # the issuer's own union
    text = present(issued.token, W.holder, disclosures=[], now=NOW)
    others = W.status_lists(record=W.other_rec)[PROVINCE]
    v = fast_verify(text, status_lists={"110000": others})
    assert (v.issuer_union, v.home_union) == ("110000", "110000")
    with pytest.raises(StatusListMissing, match="110000"):
        fast_verify(text)  # only 440000's list is held
    with pytest.raises(StatusListMissing, match="is 440000's"):
        fast_verify(text, status_lists={"110000": STATUS[PROVINCE]})
    member_of_440000 = W.issue_by(W.other_rec, home_union=PROVINCE)
    text = present(member_of_440000.token, W.holder, disclosures=[], now=NOW)
    v = fast_verify(text, status_lists={"110000": others})
    assert (v.issuer_union, v.home_union) == ("110000", PROVINCE)


def test_step_3_a_signed_home_claim_naming_the_issuer_union_is_refused() -> None:
    """One encoding: the issuer's own union is never sent, even by the issuer."""
    items = items_of(GOOD_TEXT)
    claims = cbor2.loads(items[0][2])
    claims[-3] = PROVINCE
    payload = cbor2.dumps(claims)
    protected = items[0][0]
    signature = W.key(W.issuer_rec).sign(cbor2.dumps(["Signature1", protected, b"", payload]))
    forged = resign([[protected, {}, payload, signature], *items[1:]], W.holder)
    with pytest.raises(CredentialMalformed, match="repeats"):
        fast_verify(text_of(forged))


def test_step_3_an_expired_trust_list_is_refused() -> None:
    root = W.ring.current(Role.ROOT, T0).public_key
    short = verify_trust_list(sign_trust_list(W.ring, NOW - DAY, ttl=DAY), root, NOW - DAY)
    fast_verify(GOOD_TEXT, trust_list=short, now=NOW + timedelta(seconds=29))  # leeway
    with pytest.raises(UnknownIssuer, match="trust list expired"):
        fast_verify(GOOD_TEXT, trust_list=short, now=NOW + timedelta(seconds=30))


def test_step_3_a_revoked_key_still_vouches_for_what_it_signed_before() -> None:
    issued = W.issue_by(W.revoked_rec, issued_at=T0 + 40 * DAY)
    text = present(issued.token, W.holder, disclosures=[], now=NOW)
    lists = W.status_lists(record=W.revoked_rec, signed_at=T0 + 49 * DAY)
    # Past step 3: it fails at step 6 only because the list is old (the key is revoked now).
    with pytest.raises(StatusListStale):
        fast_verify(text, status_lists={"120000": lists[PROVINCE]})


# Two Ed25519 keys whose RFC 7638 thumbprints share their first 4 bytes (19 91 bf 4d): the first
# collision among the seeds SHA-256("short kid collision <i>"), i = 0, 1, ... (a birthday search
# through 88,558 keys, one second).
COLLIDING = [
    PrivateKey.from_seed(hashlib.sha256(b"short kid collision %d" % i).digest())
    for i in (56509, 88557)
]


def colliding_trust_list(second: Role) -> tuple[keys.Keyring, keys.TrustList]:
    """W's keys plus an issuer key of union 310000 and a key of role ``second`` that share a
    short kid."""
    r, _ = W.ring.rotate(Role.ISSUER, T0, scope="310000", new_key=COLLIDING[0])
    scope = "320000" if second is Role.ISSUER else ("ST-2" if second is Role.STATION else None)
    r, _ = r.rotate(second, T0, scope=scope, new_key=COLLIDING[1])
    token = sign_trust_list(r, NOW - DAY, ttl=30 * DAY)
    return r, verify_trust_list(token, r.current(Role.ROOT, T0).public_key, NOW)


def test_short_kid_collisions() -> None:
    shorts = [cred.credential_kid(k.key_id) for k in COLLIDING]
    assert shorts == [bytes.fromhex("1991bf4d")] * 2
    assert COLLIDING[0].key_id != COLLIDING[1].key_id
    assert cred.short_kid_collisions(W.trust) == cred.short_kid_collisions(W.ring) == {}
    ring, trust = colliding_trust_list(Role.ISSUER)
    expected = {shorts[0]: tuple(sorted(k.key_id for k in COLLIDING))}  # same not_before
    assert cred.short_kid_collisions(trust) == cred.short_kid_collisions(ring) == expected
    assert cred.short_kid_collisions(list(ring)) == expected
    for other in (Role.STATION, Role.LOG):  # only issuer keys are named by a short kid
        ring, trust = colliding_trust_list(other)
        assert cred.short_kid_collisions(trust) == cred.short_kid_collisions(ring) == {}


def test_short_kid_collisions_lists_the_newest_key_last() -> None:
    r, older = W.ring.rotate(Role.ISSUER, T0, scope="310000", new_key=COLLIDING[1])
    r, newer = r.rotate(Role.ISSUER, T0 + DAY, scope="310000", new_key=COLLIDING[0])
    assert cred.short_kid_collisions(r) == {cred.credential_kid(older.kid): (older.kid, newer.kid)}


def issued_by_colliding(trust: keys.TrustList) -> tuple[str, dict[str, VerifiedStatusList]]:
    key = COLLIDING[0]
    record = trust.keyring.record(key.key_id)
    issued = W.issue(issuer_key=key, issuer=record, home_union="310000")
    text = present(issued.token, W.holder, disclosures=[], now=NOW)
    token = sign_status_list(
        StatusList(100_000),
        uri="https://ul.example/status/310000",
        issuer_key=key,
        kid=key.key_id,
        now=NOW - timedelta(hours=1),
        ttl=DAY,
    )
    return text, {"310000": verify_status_list(token, trust, NOW)}


def test_step_3_a_short_kid_naming_two_issuer_keys_is_refused() -> None:
    _, trust = colliding_trust_list(Role.ISSUER)
    text, lists = issued_by_colliding(trust)
    with pytest.raises(UnknownIssuer, match="1991bf4d matches 2 issuer keys"):
        fast_verify(text, trust_list=trust, status_lists=lists)


@pytest.mark.parametrize("other", [Role.STATION, Role.LOG])
def test_step_3_another_role_s_key_with_the_same_short_kid_is_no_obstacle(other: Role) -> None:
    _, trust = colliding_trust_list(other)
    text, lists = issued_by_colliding(trust)
    v = fast_verify(text, trust_list=trust, status_lists=lists)
    assert (v.issuer_union, v.home_union) == ("310000", "310000")


def test_step_3_only_issuer_keys_are_indexed() -> None:
    index = cred._keys_by_short_kid(W.trust)
    issuers = [r for r in W.trust.keyring if r.role is Role.ISSUER]
    assert len(issuers) < len(W.trust.keyring)
    assert sorted(index) == sorted(cred.credential_kid(r.kid) for r in issuers)
    assert {(e.kid, e.scope) for found in index.values() for e in found} == {
        (r.kid, r.scope) for r in issuers
    }


@settings(max_examples=60)
@given(st.integers(min_value=-5, max_value=200), st.sampled_from(["cur", "next", "rev", "st"]))
def test_step_3_fast_path_agrees_with_the_keyring(day: int, which: str) -> None:
    record = {"cur": W.issuer_rec, "next": W.next_rec, "rev": W.revoked_rec, "st": W.station_rec}
    rec = record[which]
    at = T0 + day * DAY + timedelta(seconds=day * 7)
    claims = decode_credential(GOOD.token)._replace(
        kid=cred.credential_kid(rec.kid), issued_at=int(at.timestamp())
    )
    try:
        key = W.trust.verification_key(rec.kid, Role.ISSUER, at, scope=rec.scope)
        expected: object = (key, rec.scope)
    except keys.KeysError:
        expected = UnknownIssuer
    try:
        entry = cred._issuer_key(W.trust, claims, NOW, timedelta(0))
        got: object = (entry.public_key, entry.scope)
    except UnknownIssuer:
        got = UnknownIssuer
    assert got == expected


def test_step_4_issuer_signature() -> None:
    items = items_of(GOOD_TEXT)
    for change in ({"member": b"\x01" * 16}, {"groups": b"\x00" * 24}, {"status": 1}):
        forged = resign(with_claims(items, **change), W.holder)
        with pytest.raises(CredentialSignatureInvalid):
            fast_verify(text_of(forged))
    bad_signature = [[*items[0][:3], bytes(64)], *items[1:]]
    with pytest.raises(CredentialSignatureInvalid):
        fast_verify(text_of(resign(bad_signature, W.holder)))


def test_step_5_validity_with_leeway() -> None:
    exp = ISSUED + 365 * DAY
    leeway = timedelta(seconds=30)
    at_exp = present(GOOD.token, W.holder, disclosures=[], now=exp + leeway)
    fast_verify(
        present(GOOD.token, W.holder, disclosures=[], now=exp),
        now=exp + leeway - timedelta(seconds=1),
        status_lists=W.status_lists(signed_at=exp),
    )
    with pytest.raises(CredentialExpired):
        fast_verify(at_exp, now=exp + leeway, status_lists=W.status_lists(signed_at=exp))
    early = present(GOOD.token, W.holder, disclosures=[], now=ISSUED - leeway)
    fast_verify(early, now=ISSUED - leeway, status_lists=W.status_lists(signed_at=ISSUED))
    too_early = present(GOOD.token, W.holder, disclosures=[], now=ISSUED - 2 * leeway)
    with pytest.raises(CredentialNotYetValid):
        fast_verify(too_early, now=ISSUED - 2 * leeway)


def test_step_6_revocation() -> None:
    revoked = StatusList(100_000)
    revoked.set(1234)
    with pytest.raises(CredentialRevoked, match="revoked"):
        fast_verify(GOOD_TEXT, status_lists=W.status_lists(bits=revoked))
    suspended = StatusList(100_000, bits=2)
    suspended.set(1234, 2)
    with pytest.raises(CredentialRevoked, match="suspended"):
        fast_verify(GOOD_TEXT, status_lists=W.status_lists(bits=suspended))
    neighbours = StatusList(100_000)
    for i in (1233, 1235):
        neighbours.set(i)
    fast_verify(GOOD_TEXT, status_lists=W.status_lists(bits=neighbours))


def test_step_6_status_list_missing_stale_or_too_short() -> None:
    with pytest.raises(StatusListMissing):
        fast_verify(GOOD_TEXT, status_lists={})
    others = W.status_lists(record=W.other_rec)
    with pytest.raises(StatusListMissing, match="110000"):
        fast_verify(GOOD_TEXT, status_lists=others)  # 110000's list filed under 440000
    expired = W.status_lists(signed_at=NOW - DAY - timedelta(minutes=1))
    with pytest.raises(StatusListStale, match="expired"):
        fast_verify(GOOD_TEXT, status_lists=expired)
    old = W.status_lists(signed_at=NOW - DAY - timedelta(minutes=1), lifetime=7 * DAY)
    with pytest.raises(StatusListStale, match="ttl"):
        fast_verify(GOOD_TEXT, status_lists=old)
    fresh_enough = W.status_lists(signed_at=NOW - DAY + timedelta(minutes=1))
    fast_verify(GOOD_TEXT, status_lists=fresh_enough)
    with pytest.raises(StatusListStale, match="maximum age"):
        fast_verify(GOOD_TEXT, status_lists=fresh_enough, status_max_age=timedelta(hours=12))
    future = W.status_lists(signed_at=NOW + timedelta(minutes=5))
    with pytest.raises(StatusListStale, match="future"):
        fast_verify(GOOD_TEXT, status_lists=future)
    short = W.status_lists(bits=StatusList(1024))
    with pytest.raises(StatusIndexOutOfRange):
        fast_verify(GOOD_TEXT, status_lists=short)


def test_step_7_holder_proof_by_another_key() -> None:
    thief = PrivateKey.generate()
    with pytest.raises(HolderProofInvalid):
        fast_verify(text_of(resign(items_of(GOOD_TEXT), thief)))
    # The member's own key, another credential's proof: the hash binds the proof to one.
    second = W.issue(status_index=4321)
    borrowed = items_of(present(second.token, W.holder, disclosures=[], now=NOW))
    items = items_of(GOOD_TEXT)
    with pytest.raises(HolderProofInvalid):
        fast_verify(text_of([items[0], borrowed[1], borrowed[2]]))


def test_step_7_nothing_can_be_added_or_stripped_in_transit() -> None:
    items = items_of(present(GOOD.token, W.holder, disclosures=[], now=NOW))
    hardship = GOOD.disclosures["hardship"]
    with pytest.raises(HolderProofInvalid):
        fast_verify(text_of([*items, hardship]))  # a disclosure the member did not choose
    items = items_of(GOOD_TEXT)
    with pytest.raises(HolderProofInvalid):
        fast_verify(text_of(items[:3]))
    with pytest.raises(HolderProofInvalid):
        fast_verify(text_of([items[0], items[1] + 1, *items[2:]]))


def test_step_8_an_old_screenshot_is_stale() -> None:
    window = timedelta(seconds=90 + 30)
    for offset in (-window, window):
        fast_verify(present(GOOD.token, W.holder, disclosures=[], now=NOW + offset))
    for offset in (
        -window - timedelta(seconds=1),
        window + timedelta(seconds=1),
        -timedelta(hours=20),
        -timedelta(days=30),
    ):
        shot = present(GOOD.token, W.holder, disclosures=[], now=NOW + offset)
        with pytest.raises(HolderProofStale):
            fast_verify(shot)
    shot = present(GOOD.token, W.holder, disclosures=[], now=NOW - timedelta(minutes=5))
    fast_verify(shot, max_proof_age=timedelta(minutes=5))


def test_step_9_challenge() -> None:
    answered = present(GOOD.token, W.holder, disclosures=[], now=NOW, challenge=b"\x07\x31")
    fast_verify(answered, challenge=b"\x07\x31")
    fast_verify(answered)  # a station that asked nothing accepts an answer to someone's question
    with pytest.raises(ChallengeMismatch):
        fast_verify(answered, challenge=b"\x07\x32")
    with pytest.raises(ChallengeMismatch):
        fast_verify(GOOD_TEXT, challenge=b"\x07\x31")  # no answer at all
    items = items_of(answered)
    items[1][1] = b"\x07\x32"  # the answer changed on the way: the proof no longer covers it
    with pytest.raises(HolderProofInvalid):
        fast_verify(text_of(items), challenge=b"\x07\x32")


def test_step_10_disclosures() -> None:
    salt = bytes(SALT_SIZE)
    other = W.issue(rng=bytes)  # the same member's other credential
    real = cbor2.loads(GOOD.disclosures["delivery_rider"])
    cases = {
        "a group not in the credential": cbor2.dumps([salt, GROUP_CODES["hardship"] + 1]),
        "hardship, guessed salt": cbor2.dumps([salt, GROUP_CODES["hardship"]]),
        "another credential's": other.disclosures["hardship"],
        "group code changed": cbor2.dumps([real[0], GROUP_CODES["hardship"]]),
        "not CBOR": b"\xff",
    }
    for why, disclosure in cases.items():
        text = present(GOOD.token, W.holder, disclosures=[disclosure], now=NOW)
        with pytest.raises(BadDisclosure):
            fast_verify(text)
        assert why
    twice = [GOOD.disclosures["hardship"]] * 2
    with pytest.raises(BadDisclosure, match="twice"):
        fast_verify(present(GOOD.token, W.holder, disclosures=twice, now=NOW))


def test_step_10_a_digest_straddling_two_digests_does_not_match() -> None:
    claims = decode_credential(GOOD.token)
    straddling = claims.digests[6 : 6 + DIGEST_SIZE]
    assert not cred._has_digest(claims.digests, straddling)
    assert cred._has_digest(claims.digests, claims.digests[DIGEST_SIZE:])


def test_checks_run_in_the_documented_order() -> None:
    """A presentation wrong in several ways is refused for the earliest failing check."""
    revoked = StatusList(100_000)
    revoked.set(1234)
    late = NOW + 400 * DAY
    stale_proof = present(GOOD.token, W.holder, disclosures=[b"\x00"], now=NOW - DAY)
    lists = W.status_lists(bits=revoked, signed_at=late)
    with pytest.raises(CredentialExpired):  # 5 before 6, 8 and 10
        fast_verify(stale_proof, now=late, status_lists=lists)
    thief = text_of(resign(items_of(stale_proof), PrivateKey.generate()))
    revoked_lists = W.status_lists(bits=revoked)
    with pytest.raises(CredentialRevoked):  # 6 before 7, 8 and 10
        fast_verify(thief, status_lists=revoked_lists)
    with pytest.raises(HolderProofStale):  # 8 before 9 and 10
        fast_verify(stale_proof, challenge=b"x")
    stranger = PrivateKey.generate()
    unknown = W.issue(issuer_key=stranger, issuer=stranger_record(stranger))
    forged = with_claims(items_of(present(unknown.token, W.holder, disclosures=[], now=NOW)), exp=0)
    with pytest.raises(CredentialMalformed):  # 2 before 3 (exp before iat)
        fast_verify(text_of(forged))
    steps = [
        (CredentialMalformed, 2),
        (UnknownIssuer, 3),
        (CredentialSignatureInvalid, 4),
        (CredentialExpired, 5),
        (CredentialNotYetValid, 5),
        (CredentialRevoked, 6),
        (StatusListStale, 6),
        (StatusListMissing, 6),
        (StatusIndexOutOfRange, 6),
        (HolderProofInvalid, 7),
        (HolderProofStale, 8),
        (ChallengeMismatch, 9),
        (BadDisclosure, 10),
    ]
    codes = set()
    for cls, step in steps:
        assert issubclass(cls, CredentialError)
        assert issubclass(cls, VerifierError)
        assert cls.step == step
        codes.add(cls.code)
    assert len(codes) == len(steps)  # stable, distinct codes


# -- tampering and fuzzing ---------------------------------------------------------------------

ALPHABET = sorted(QR_ALPHANUMERIC)


def test_every_single_character_change_is_refused() -> None:
    """Exhaustive over positions: each character replaced by the next one of the alphabet."""
    for i in range(len(GOOD_TEXT)):
        char = GOOD_TEXT[i]
        replacement = ALPHABET[(ALPHABET.index(char) + 1) % len(ALPHABET)]
        with pytest.raises(CredentialError):
            fast_verify(GOOD_TEXT[:i] + replacement + GOOD_TEXT[i + 1 :])


@settings(max_examples=300)
@given(st.data())
def test_any_edit_of_the_text_is_refused(data: st.DataObject) -> None:
    text = GOOD_TEXT
    i = data.draw(st.integers(0, len(text) - 1))
    char = data.draw(st.sampled_from(ALPHABET) | st.characters())
    edit = data.draw(st.sampled_from(["replace", "insert", "delete", "swap"]))
    if edit == "replace":
        changed = text[:i] + char + text[i + 1 :]
    elif edit == "insert":
        changed = text[:i] + char + text[i:]
    elif edit == "delete":
        changed = text[:i] + text[i + 1 :]
    else:
        j = data.draw(st.integers(0, len(text) - 1))
        chars = list(text)
        chars[i], chars[j] = chars[j], chars[i]
        changed = "".join(chars)
    if changed == text:
        return
    with pytest.raises(CredentialError):
        fast_verify(changed)


@settings(max_examples=300)
@given(st.data())
def test_any_byte_change_is_refused(data: st.DataObject) -> None:
    raw = bytearray(b45decode(GOOD_TEXT[4:]))
    i = data.draw(st.integers(0, len(raw) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda v: v != raw[i]))
    raw[i] = value
    with pytest.raises(CredentialError):
        fast_verify(PREFIX + b45encode(bytes(raw)))


@settings(max_examples=300)
@given(st.text() | st.text(alphabet="".join(ALPHABET)).map(lambda s: PREFIX + s))
def test_random_text_raises_only_credential_errors(text: str) -> None:
    with pytest.raises(CredentialError):
        fast_verify(text)


CBOR_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.binary(max_size=80)
    | st.text(max_size=20)
    | st.floats(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(st.integers(-8, 8) | st.text(max_size=3), inner, max_size=6)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(st.data())
def test_structured_fuzz_raises_only_credential_errors(data: st.DataObject) -> None:
    """Valid CBOR in the right places with the wrong things in it."""
    items = items_of(GOOD_TEXT)
    claims = cbor2.loads(items[0][2])
    target = data.draw(st.sampled_from(["item", "cose", "claim", "whole"]))
    value = data.draw(CBOR_VALUES)
    if target == "item":
        items[data.draw(st.integers(0, len(items) - 1))] = value
    elif target == "cose":
        items[0][data.draw(st.integers(0, 3))] = value
    elif target == "claim":
        claims[data.draw(st.sampled_from([1, 4, 6, -1, -2, -3, -4, -5, -9]))] = value
        items[0][2] = cbor2.dumps(claims)
    else:
        items = value
    changed = text_of(items)
    assume(changed != GOOD_TEXT)  # e.g. the unprotected {} replaced by {}
    with pytest.raises(CredentialError):
        fast_verify(changed)


@settings(max_examples=100)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_credential_errors(raw: bytes) -> None:
    with pytest.raises(CredentialError):
        fast_verify(PREFIX + b45encode(raw))


# -- base45 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [  # RFC 9285 section 4.3 and 4.4
        (b"AB", "BB8"),
        (b"Hello!!", "%69 VD92EX0"),
        (b"base-45", "UJCLQE7W581"),
        (b"ietf!", "QED8WEX0"),
        (b"", ""),
    ],
)
def test_base45_rfc_9285_examples(raw: bytes, text: str) -> None:
    assert b45encode(raw) == text
    assert b45decode(text) == raw


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_base45_matches_the_reference_package(raw: bytes) -> None:
    text = b45encode(raw)
    assert text == base45.b45encode(raw).decode()
    assert b45decode(text) == raw


@settings(max_examples=500)
@given(st.text(alphabet="".join(ALPHABET) + "a\n\x00é", max_size=12))
def test_base45_decode_agrees_with_the_reference_on_any_text(text: str) -> None:
    try:
        expected: bytes | None = base45.b45decode(text)
    except ValueError:
        expected = None
    if text.endswith("\n"):  # the reference strips a final newline; a QR never carries one
        expected = None
    try:
        got: bytes | None = b45decode(text)
    except ValueError:
        got = None
    assert got == expected


# -- sizes and the documentation's generated sections --------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "credentials.md"
TYPICAL = "**typical**: home 11 chars, 1 group"
GROUPS = ("delivery_rider", "hardship", "female_worker")
SIZE_CASES: list[tuple[str, str, int, int, int, bytes | None]] = [
    # label, home union, groups in the credential, disclosed, status index, challenge
    ("home = issuer, 1 group", PROVINCE, 1, 1, 1_234_567, None),
    (TYPICAL, HOME, 1, 1, 1_234_567, None),
    ("home = issuer, 2 groups", PROVINCE, 2, 1, 1_234_567, None),
    ("home 11 chars, 2 groups", HOME, 2, 1, 1_234_567, None),
    ("home 11 chars, 2 groups, both disclosed", HOME, 2, 2, 1_234_567, None),
    ("home 11 chars, 3 groups", HOME, 3, 1, 1_234_567, None),
    ("typical, nothing disclosed", HOME, 1, 0, 1_234_567, None),
    ("typical, status index below 65,536", HOME, 1, 1, 1_234, None),
    ("typical, with an 8-byte station challenge", HOME, 1, 1, 1_234_567, bytes(8)),
]


def measure_sizes() -> dict[str, tuple[int, int, int, int, int]]:
    """label -> (credential bytes, presentation bytes, characters, QR version at Q, at M),
    each presentation verified first."""
    lists = W.status_lists(bits=StatusList(2_000_000))
    out = {}
    for label, home, n, disclosed, index, challenge in SIZE_CASES:
        issued = W.issue(home_union=home, groups=list(GROUPS[:n]), status_index=index)
        chosen = [issued.disclosures[g] for g in sorted(GROUPS[:n])[:disclosed]]
        text = present(issued.token, W.holder, disclosures=chosen, now=NOW, challenge=challenge)
        fast_verify(text, status_lists=lists, challenge=challenge)
        size = len(b45decode(text[len(PREFIX) :]))
        out[label] = (len(issued.token), size, len(text), qr_version(text), qr_version(text, "M"))
    return out


def qr_capacity(version: int, level: str) -> int:
    """The most alphanumeric characters a QR code of ``version`` holds at ``level``."""
    low, high = 1, 4296
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if qr_version("A" * mid, level) <= version else (low, mid - 1)
    return low


def sizes_section() -> str:
    rows = measure_sizes()
    lines = [
        "Unless a row says otherwise: status index above 65,535, one group disclosed, no"
        " challenge; characters include `UL1:`.",
        "",
        "| presentation | credential bytes | presentation bytes | characters | QR at Q | QR at M |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    lines += [f"| {label} | {' | '.join(map(str, row))} |" for label, row in rows.items()]
    capacity = ", ".join(
        f"version {v} at {level}: {qr_capacity(v, level)}" for v, level in [(15, "Q"), (14, "Q")]
    )
    lines += ["", f"Alphanumeric capacity: {capacity} characters."]
    return "\n".join(lines)


def test_size_budget() -> None:
    """DESIGN.md section 5: the typical presentation (a member of an 11-character grassroots
    union whose credential the province issued, one group disclosed, status index above
    65,535, no challenge) takes at most 410 characters: QR version 15 at level Q."""
    rows = measure_sizes()
    credential, size, chars, at_q, at_m = rows[TYPICAL]
    print(f"\ntypical station QR: {chars} characters, v{at_q} at Q, v{at_m} at M")
    assert chars <= 410
    assert at_q <= 15
    # Up to two groups with one disclosed, an 8-byte challenge too, still fit version 15.
    beyond = {"home 11 chars, 2 groups, both disclosed", "home 11 chars, 3 groups"}
    assert all(row[3] <= 15 for label, row in rows.items() if label not in beyond)
    # The figures written in prose agree with the measurement.
    assert f"is\n{chars} characters: QR version {at_q} at level Q" in (cred.__doc__ or "")
    prose = DOC.read_text(encoding="utf-8")
    assert f"({chars} characters,\n{410 - chars} to spare)" in prose
    # The increments docs/credentials.md states, measured.
    assert chars == len(PREFIX) + 3 * (size // 2) + 2 * (size % 2)  # base45
    assert rows["home 11 chars, 2 groups"][0] == rows["home = issuer, 2 groups"][0] + 11 + 2
    assert rows["home 11 chars, 2 groups"][0] == credential + 1 + DIGEST_SIZE  # digest head grows
    assert rows["home 11 chars, 3 groups"][0] == credential + 1 + 2 * DIGEST_SIZE
    assert rows["home 11 chars, 2 groups, both disclosed"][1] == rows["home 11 chars, 2 groups"][
        1
    ] + (1 + 2 + SALT_SIZE + 1)
    assert rows["typical, nothing disclosed"][1] == size - (1 + 2 + SALT_SIZE + 1)
    assert rows["typical, status index below 65,536"][1] == size - 2
    assert rows["typical, with an 8-byte station challenge"][1] == size + 8 + 2


# The worked example: every input fixed (Ed25519 signatures are deterministic), so these bytes
# are the same on every run and in every correct implementation.
EX_ISSUER = PrivateKey.from_seed(bytes(range(32)))
EX_HOLDER = PrivateKey.from_seed(bytes(range(32, 64)))
EX_ROOT = PrivateKey.from_seed(bytes(range(64, 96)))
EX_SALTS = {"delivery_rider": bytes(range(0xA0, 0xAC)), "hardship": bytes(range(0xB0, 0xBC))}
EX_IAT = datetime(2026, 4, 11, tzinfo=UTC)
EX_EXP = datetime(2027, 4, 11, tzinfo=UTC)
EX_NOW = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)
EX_INDEX = 123_456
EX_RECORD = keys.KeyRecord(
    kid=EX_ISSUER.key_id,
    role=Role.ISSUER,
    public_key=EX_ISSUER.public_key,
    not_before=datetime(2026, 1, 1, tzinfo=UTC),
    scope=PROVINCE,
)


def example() -> tuple[IssuedCredential, str]:
    salts = iter(EX_SALTS.values())  # issue_credential draws salts in sorted group order
    issued = issue_credential(
        issuer_key=EX_ISSUER,
        issuer=EX_RECORD,
        member_id=MEMBER,
        home_union=HOME,
        holder_public_key=EX_HOLDER.public_key,
        groups=["hardship", "delivery_rider"],
        status_index=EX_INDEX,
        issued_at=EX_IAT,
        expires_at=EX_EXP,
        rng=lambda n: next(salts)[:n],
    )
    disclosure = issued.disclosures["delivery_rider"]
    return issued, present(issued.token, EX_HOLDER, disclosures=[disclosure], now=EX_NOW)


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def annotated(data: bytes, digest_groups: dict[bytes, str]) -> list[tuple[int, bytes, str]]:
    """The presentation ``data`` cut into (depth, bytes, meaning); every byte accounted for."""
    out: list[tuple[int, bytes, str]] = []
    at = 0

    def take(depth: int, n: int, meaning: str, expect: bytes | None = None) -> bytes:
        nonlocal at
        part = data[at : at + n]
        assert expect is None or part == expect, (meaning, part.hex(), expect.hex())
        out.append((depth, part, meaning))
        at += n
        return part

    items = cbor2.loads(data)
    claims = cbor2.loads(items[0][2])
    take(0, 1, f"array of {len(items)}: credential, proof time, holder signature, 1 disclosure")
    take(1, 1, "credential: COSE_Sign1 [protected, unprotected, payload, signature]", b"\x84")
    take(2, 1, "protected: bstr of 9 bytes", b"\x49")
    take(3, 5, "{1 (alg): -8 (EdDSA), 4 (kid): bstr of 4 bytes}", bytes.fromhex("a2012704 44"))
    take(4, 4, "the short kid: SHA-256 thumbprint's first 4 bytes")
    take(2, 1, "unprotected: {} (empty)", b"\xa0")
    take(2, 2, f"payload: bstr of {len(items[0][2])} bytes, the claims", b"\x58\x70")
    take(3, 1, f"map of {len(claims)} claims", b"\xa7")
    take(3, 6, f"4 (exp): {_iso(claims[4])}")
    take(3, 6, f"6 (iat): {_iso(claims[6])}")
    take(3, 2, "-1 (member id): bstr of 16 bytes", b"\x20\x50")
    take(4, 16, f'"{MEMBER}" in base64url')
    take(3, 3, "-2 (holder key): bstr of 32 bytes", b"\x21\x58\x20")
    take(4, 32, "the holder's raw Ed25519 public key")
    take(3, 2, "-3 (home union): text of 11 bytes", b"\x22\x6b")
    take(4, 11, f'"{HOME}"', HOME.encode())
    take(3, 6, f"-4 (status index): {claims[-4]}")
    take(3, 3, "-5 (group digests): bstr of 2 x 12 bytes, sorted", b"\x24\x58\x18")
    for i in range(2):
        digest = claims[-5][i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]
        take(4, DIGEST_SIZE, f"digest of the {digest_groups[digest]} disclosure", digest)
    take(2, 2, "signature: bstr of 64 bytes", b"\x58\x40")
    take(3, 64, "the issuer's Ed25519 signature of the Sig_structure")
    take(1, 5, f"proof time: {_iso(items[1])}")
    take(1, 2, "holder signature: bstr of 64 bytes", b"\x58\x40")
    take(2, 64, "the holder key's Ed25519 signature of the holder message")
    take(1, 1, "disclosure: bstr of 15 bytes", b"\x4f")
    take(2, 2, "[salt: bstr of 12 bytes,", b"\x82\x4c")
    take(3, SALT_SIZE, "the salt", EX_SALTS["delivery_rider"])
    take(2, 1, " group: 1 (delivery_rider)]", b"\x01")
    assert at == len(data)
    return out


def _dump(parts: list[tuple[int, bytes, str]]) -> str:
    lines = []
    for depth, part, meaning in parts:
        for i in range(0, len(part), 16):
            hexed = "  " * depth + part[i : i + 16].hex(" ")
            lines.append(f"{hexed:<56}{meaning if i == 0 else ''}".rstrip())
    return "\n".join(lines)


def _hex_block(data: bytes) -> str:
    return "\n".join(data[i : i + 32].hex() for i in range(0, len(data), 32))


def worked_example_section() -> str:
    issued, text = example()
    data = b45decode(text[len(PREFIX) :])
    items = cbor2.loads(data)
    protected, _, payload, _ = items[0]
    digests = {cred.disclosure_digest(d): g for g, d in issued.disclosures.items()}
    sig_structure = cbor2.dumps(["Signature1", protected, b"", payload])
    holder_message = cbor2.dumps(
        [cred.HOLDER_PROOF_CONTEXT, issued.credential_hash, items[1], None, items[3:]]
    )
    assert cred._sig_structure(cbor2.dumps(protected), cbor2.dumps(payload)) == sig_structure
    assert cred._holder_message(issued.credential_hash, items[1], None, items[3:]) == (
        holder_message
    )
    kid = keys.b64url_decode(EX_ISSUER.key_id)
    fence = "```"
    rows = [
        ("issuer key seed (RFC 8032)", EX_ISSUER.seed().hex()),
        ("issuer public key", EX_ISSUER.public_key.to_bytes().hex()),
        ("issuer kid (RFC 7638, base64url)", f"`{EX_ISSUER.key_id}`"),
        ("issuer kid, the 32 bytes", kid.hex()),
        ("short kid", kid[:KID_SIZE].hex()),
        ("issuer key record", f"role `issuer`, scope `{PROVINCE}`, nbf 2026-01-01T00:00:00Z"),
        ("holder key seed", EX_HOLDER.seed().hex()),
        ("holder public key", EX_HOLDER.public_key.to_bytes().hex()),
        ("member id", f"`{MEMBER}` (bytes 00 01 ... 0f)"),
        ("home union", f"`{HOME}`"),
        ("groups", "`delivery_rider` (code 1), `hardship` (code 7)"),
        ("salts", ", ".join(f"{g}: {s.hex()}" for g, s in EX_SALTS.items())),
        ("status index", f"{EX_INDEX:,}"),
        ("iat, exp", f"{_iso(int(EX_IAT.timestamp()))}, {_iso(int(EX_EXP.timestamp()))}"),
        ("proof time, challenge", f"{_iso(int(EX_NOW.timestamp()))}, none"),
        ("disclosed", "`delivery_rider`"),
    ]
    disclosure_rows = [
        f"| `{g}` | {d.hex()} | {cred.disclosure_digest(d).hex()} |"
        for g, d in issued.disclosures.items()
    ]
    return "\n".join(
        [
            "| input | value |",
            "|---|---|",
            *(f"| {name} | {value} |" for name, value in rows),
            "",
            f"The QR text ({len(text)} characters, one line, spaces included; QR version"
            f" {qr_version(text)} at Q):",
            "",
            fence,
            text,
            fence,
            "",
            f"Its {len(data)} bytes after base45, byte by byte:",
            "",
            fence,
            _dump(annotated(data, digests)),
            fence,
            "",
            "The disclosures and their digests (SHA-256 of the context string and the"
            " disclosure bytes, first 12 bytes):",
            "",
            "| group | disclosure | digest |",
            "|---|---|---|",
            *disclosure_rows,
            "",
            f"The issuer's Sig_structure ({len(sig_structure)} bytes, hex):",
            "",
            fence,
            _hex_block(sig_structure),
            fence,
            "",
            f"The credential hash, SHA-256 of the credential's {len(issued.token)} bytes:",
            "",
            fence,
            issued.credential_hash.hex(),
            fence,
            "",
            f"The holder message ({len(holder_message)} bytes, hex):",
            "",
            fence,
            _hex_block(holder_message),
            fence,
        ]
    )


def group_codes_section() -> str:
    lines = ["| code | group |", "|--:|---|"]
    lines += [f"| {code} | `{group}` |" for group, code in GROUP_CODES.items()]
    return "\n".join(lines)


def generated_sections() -> dict[str, str]:
    return {
        "worked-example": worked_example_section(),
        "sizes": sizes_section(),
        "group-codes": group_codes_section(),
    }


def _marked(name: str) -> tuple[str, str]:
    return f"<!-- generated: {name} -->\n\n", f"\n\n<!-- end: {name} -->"


def doc_section(doc: str, name: str) -> str:
    begin, end = _marked(name)
    assert doc.count(begin) == 1, name
    assert doc.count(end) == 1, name
    return doc[doc.index(begin) + len(begin) : doc.index(end)]


def test_the_worked_example_verifies() -> None:
    ring = Keyring([EX_RECORD], {EX_RECORD.kid: EX_ISSUER})
    ring, _ = ring.rotate(Role.ROOT, datetime(2026, 1, 1, tzinfo=UTC), new_key=EX_ROOT)
    trust = verify_trust_list(sign_trust_list(ring, EX_NOW), EX_ROOT.public_key, EX_NOW)
    status = sign_status_list(
        StatusList(200_000),
        uri=f"https://ul.example/status/{PROVINCE}",
        issuer_key=EX_ISSUER,
        kid=EX_ISSUER.key_id,
        now=EX_NOW,
        ttl=DAY,
    )
    lists = {PROVINCE: verify_status_list(status, trust, EX_NOW)}
    _, text = example()
    v = verify_presentation(text, trust_list=trust, status_lists=lists, now=EX_NOW)
    assert (v.issuer_union, v.home_union, v.groups) == (
        PROVINCE,
        HOME,
        frozenset({"delivery_rider"}),
    )


def test_the_documentation_is_generated_from_the_code() -> None:
    """docs/credentials.md's example, sizes and group codes are this code's output, exactly.
    After a deliberate change, regenerate them: ``python -m tests.verifier.test_credential``."""
    doc = DOC.read_text(encoding="utf-8")
    for name, text in generated_sections().items():
        assert doc_section(doc, name) == text, f"docs/credentials.md section {name} is stale"


def test_the_documentation_names_every_check_and_error() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for cls in (
        CredentialMalformed,
        UnknownIssuer,
        CredentialSignatureInvalid,
        CredentialExpired,
        CredentialNotYetValid,
        CredentialRevoked,
        StatusListStale,
        StatusListMissing,
        StatusIndexOutOfRange,
        HolderProofInvalid,
        HolderProofStale,
        ChallengeMismatch,
        BadDisclosure,
    ):
        assert f"`{cls.code}`" in doc, cls
        assert f"`{cls.__name__}`" in doc, cls
    assert cred.HOLDER_PROOF_CONTEXT in doc
    assert repr(cred.DISCLOSURE_CONTEXT)[2:-1] in doc
    assert "## The SD-JWT VC\n\nSee docs/sd-jwt.md" in doc


def write_doc_sections() -> None:
    """Rewrite the generated sections of docs/credentials.md in place."""
    doc = DOC.read_text(encoding="utf-8")
    for name, text in generated_sections().items():
        begin, end = _marked(name)
        doc = doc.replace(begin + doc_section(doc, name) + end, begin + text + end)
    DOC.write_text(doc, encoding="utf-8")


# -- the QR ---------------------------------------------------------------------------------


def _read_png(path: Path) -> tuple[int, int, bytes]:
    """Decode the 1-bit greyscale PNG the wallet writes into 8-bit grey pixels."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    at, idat = 8, b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        if data[at + 4 : at + 8] == b"IDAT":
            idat += data[at + 8 : at + 8 + length]
        at += 12 + length
    raw = zlib.decompress(idat)
    stride = (width + 7) // 8 + 1
    pixels = bytearray()
    for y in range(height):
        line = raw[y * stride + 1 : (y + 1) * stride]
        bits = bin(int.from_bytes(line, "big"))[2:].zfill(len(line) * 8)[:width]
        pixels += bytes(255 if b == "1" else 0 for b in bits)
    return width, height, bytes(pixels)


@pytest.mark.parametrize("scale", [3, 4])
def test_qr_png_is_read_back_by_zxing(tmp_path: Path, scale: int) -> None:
    import zxingcpp  # a dev dependency: real QR decoding, never skipped

    path = qr_png(GOOD_TEXT, tmp_path / "qr.png", scale=scale)
    width, height, pixels = _read_png(path)
    assert width == height == (qr_version(GOOD_TEXT) * 4 + 17 + 8) * scale  # about 300 pixels
    image = memoryview(pixels).cast("B", (height, width))
    found = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    assert [b.text for b in found] == [GOOD_TEXT]


def test_qr_helpers_refuse_what_is_not_alphanumeric() -> None:
    with pytest.raises(ValueError, match="alphanumeric"):
        qr_version("ul1:abc")
    with pytest.raises(ValueError, match="level"):
        qr_version("UL1:", "X")
    matrix = qr_matrix(GOOD_TEXT)
    assert len(matrix) == qr_version(GOOD_TEXT) * 4 + 17 + 8


if __name__ == "__main__":
    write_doc_sections()
