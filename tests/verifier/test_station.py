"""The station's offline client, pure part: records (round trip, every mutation refused, keys,
clock skew), batches (gap, duplicate, reorder, tamper, replay), the offline decision (each
refusal reason), the cache's staleness, the program policies, and docs/station.md's example.

Run ``python -m tests.verifier.test_station`` to regenerate docs/station.md's generated
sections after a deliberate change of the format."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

import keys
from keys import (
    Keyring,
    PrivateKey,
    Role,
    b64url_decode,
    b64url_encode,
    sign_trust_list,
    verify_trust_list,
)
from verifier import errors
from verifier.credential import VerifiedPresentation, issue_credential, verify_presentation
from verifier.errors import (
    RecordChainBroken,
    RecordClockSkew,
    RecordDuplicate,
    RecordGap,
    RecordKeyRevoked,
    RecordMalformed,
    RecordReordered,
    RecordReplayed,
    RecordSignatureInvalid,
    RecordUnknownKey,
    RecordWrongStation,
    StationCacheError,
    StationRecordError,
)
from verifier.station import (
    CHINA,
    GENESIS,
    RECORD_TYP,
    REFUSAL_CODES,
    Accept,
    LocalCounters,
    MaxAges,
    OfflinePolicy,
    OfflineRecord,
    OfflineRemaining,
    RecordClaims,
    Refusal,
    StationCache,
    StationInfo,
    check_signatures,
    china_day,
    decide,
    judge,
    offline_remaining,
    record_hash,
    sign_record,
    station_key_records,
    verify_batch,
    verify_record,
)
from verifier.statuslist import StatusList, sign_status_list
from verifier.wallet import Wallet

DOC = Path(__file__).resolve().parents[2] / "docs" / "station.md"

DAY = timedelta(days=1)
T0 = datetime(2027, 7, 1, 4, 0, tzinfo=UTC)  # 12:00 China time, in the programs' period
PROVINCE, HOME = "440000", "440106-0012"
STATION, OTHER = "ST-GZ-0001", "ST-GZ-0002"


def seeded(label: str) -> PrivateKey:
    return PrivateKey.from_seed(hashlib.sha256(label.encode()).digest())


def member_id(label: str) -> str:
    return b64url_encode(hashlib.sha256(b"member " + label.encode()).digest()[:16])


def deep_update(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for name, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(name), dict):
            out[name] = deep_update(out[name], value)
        else:
            out[name] = value
    return out


BASE_RULES: dict[str, Any] = {
    # The stored form (ledger/programs.py Rules.to_json), as the server provisions it.
    "allocations": {},
    "budget": None,
    "eligibility": {"groups_any": [], "home_subtree": None, "min_tenure_days": None},
    "kind": "universal",
    "max_quantity": 1,
    "name": "summer cooling pack",
    "no_stack_with": [],
    "offline": {"allowed": True, "per_member_per_day": 1, "station_daily_value": 10000},
    "period": {"from": "2027-06-01", "until": "2027-08-31"},
    "quota": {"count": 1, "per": "program"},
    "unit_value": 5000,
    "where": {"station_kinds": [], "stations": [], "subtree": None},
}


def rules(**changes: Any) -> dict[str, Any]:
    return deep_update(BASE_RULES, changes)


PROGRAMS: dict[str, dict[str, Any]] = {
    # 2 packs a day per station (10,000 fen), 1 per member.
    "COOL": rules(),
    # Meals for riders and couriers: up to 3 a redemption, 3 a day per member, 6,000 fen a day.
    "MEAL": rules(
        name="rider meal",
        kind="targeted",
        eligibility={"groups_any": ["courier", "delivery_rider"]},
        max_quantity=3,
        quota={"count": 4, "per": "day"},
        unit_value=1500,
        offline={"per_member_per_day": 3, "station_daily_value": 6000},
    ),
    # Water: a service of value 0, 5 a day.
    "WATER": rules(
        name="water",
        quota={"count": 5, "per": "day"},
        unit_value=0,
        offline={"per_member_per_day": 5, "station_daily_value": 0},
        max_quantity=2,
    ),
    "GIFT": rules(name="gift", offline={"allowed": False, "per_member_per_day": 0}),
    "TENURE": rules(
        name="loyalty gift",
        kind="targeted",
        eligibility={"min_tenure_days": 365},
    ),
    "DRIVERS": rules(name="shower", where={"station_kinds": ["truck_driver_home"]}),
    "AUTUMN": rules(name="autumn pack", period={"from": "2027-09-01", "until": "2027-11-30"}),
}


class Member:
    def __init__(self, label: str, groups: list[str], index: int, world: World) -> None:
        self.label = label
        self.id = member_id(label)
        self.holder = seeded("holder " + label)
        issued = issue_credential(
            issuer_key=world.issuer_key,
            issuer=world.issuer_rec,
            member_id=self.id,
            home_union=HOME,
            holder_public_key=self.holder.public_key,
            groups=groups,
            status_index=index,
            issued_at=T0 - 100 * DAY,
            expires_at=T0 + 700 * DAY,
            rng=lambda n: hashlib.sha256(f"salt {label} {n}".encode()).digest()[:n],
        )
        self.wallet = Wallet.from_issued(self.holder, issued)

    def present(self, program: str, at: datetime) -> str:
        """The QR text for ``program`` made at ``at`` (the phone's clock)."""
        groups = PROGRAMS[program]["eligibility"]["groups_any"] if program in PROGRAMS else []
        return self.wallet.presentation(groups, at)


class World:
    """A root, union 440000's issuer key, two stations' device keys (and a second device of
    the first station), four members (one revoked), the programs."""

    def __init__(self) -> None:
        r = Keyring()
        r, self.root_rec = r.rotate(Role.ROOT, T0 - 400 * DAY, new_key=seeded("root"))
        r, self.issuer_rec = r.rotate(
            Role.ISSUER, T0 - 400 * DAY, scope=PROVINCE, new_key=seeded("issuer")
        )
        self.device = seeded("device A")
        self.device2 = seeded("device A2")
        self.other_device = seeded("device B")
        r, self.device_rec = r.register(
            Role.STATION, self.device.public_key, T0 - 30 * DAY, scope=STATION
        )
        r, self.device2_rec = r.register(
            Role.STATION, self.device2.public_key, T0 - 30 * DAY, scope=STATION
        )
        r, self.other_rec = r.register(
            Role.STATION, self.other_device.public_key, T0 - 30 * DAY, scope=OTHER
        )
        self.ring = r
        self.root_key = seeded("root")
        self.issuer_key = seeded("issuer")
        self.status = StatusList(1024)
        self.status.set(7)
        self.members = {
            "rider": Member("rider", ["delivery_rider"], 1, self),
            "courier": Member("courier", ["courier", "hardship"], 2, self),
            "plain": Member("plain", [], 3, self),
            "revoked": Member("revoked", ["delivery_rider"], 7, self),
        }
        self.keys_a = station_key_records(self.ring, STATION)
        self.keys_b = station_key_records(self.ring, OTHER)

    def trust_token(self, at: datetime) -> str:
        return sign_trust_list(self.ring, at, ttl=7 * DAY)

    def status_token(self, at: datetime) -> str:
        return sign_status_list(
            self.status,
            uri=f"https://ul.example/status/{PROVINCE}",
            issuer_key=self.issuer_key,
            kid=self.issuer_rec.kid,
            now=at,
            ttl=DAY,
        )

    def cache(
        self,
        at: datetime,
        station: StationInfo | None = None,
        programs: dict[str, dict[str, Any]] | None = None,
        **kw: Any,
    ) -> StationCache:
        return StationCache.provision(
            station=station or StationInfo(STATION, "union_station"),
            trust_list=self.trust_token(at),
            roots=self.root_key.public_key,
            status_lists=[self.status_token(at)],
            programs=[
                {"program": p, "version": 1, "rules": r}
                for p, r in (PROGRAMS if programs is None else programs).items()
            ],
            now=at,
            **kw,
        )


W = World()
CACHE = W.cache(T0)
POLICIES = CACHE.programs
A_INFO = StationInfo(STATION, "union_station")


def verified(
    member: str = "rider", program: str = "COOL", at: datetime = T0
) -> VerifiedPresentation:
    text = W.members[member].present(program, at)
    return verify_presentation(
        text, trust_list=CACHE.trust_list, status_lists=CACHE.status_lists, now=at
    )


# -- records -----------------------------------------------------------------------------------


def claims(seq: int = 1, prev: str = GENESIS, **changes: Any) -> RecordClaims:
    base = RecordClaims(
        station=STATION,
        seq=seq,
        prev=prev,
        program="COOL",
        version=1,
        quantity=1,
        value=5000,
        presentation=b64url_encode(hashlib.sha256(b"presentation %d" % seq).digest()),
        member=W.members["rider"].id,
        home=HOME,
        iat=int(T0.timestamp()) + 60 * seq,
        clk=int(T0.timestamp()) + 60 * seq - 3,
    )
    return dataclasses.replace(base, **changes)


def chain(
    n: int,
    *,
    start: int = 1,
    prev: str = GENESIS,
    key: PrivateKey | None = None,
    **changes: Any,
) -> list[OfflineRecord]:
    out = []
    for seq in range(start, start + n):
        record = sign_record(claims(seq, prev, **changes), key or W.device)
        out.append(record)
        prev = record.hash
    return out


def verify(token: str, **kw: Any) -> OfflineRecord:
    args: dict[str, Any] = {"expected_station": STATION, "now": T0 + DAY}
    args.update(kw)
    return verify_record(token, W.keys_a, **args)


def test_record_round_trip() -> None:
    c = claims()
    record = sign_record(c, W.device)
    assert sign_record(c, W.device) == record, "deterministic: same claims, same token"
    back = verify(record.token)
    assert back.claims == c
    assert (back.kid, back.hash, back.token) == (W.device.key_id, record.hash, record.token)
    assert record.hash == record_hash(record.token)
    assert record.seq == 1
    assert record.prev == GENESIS == "A" * 43
    assert back.claims.day == "2027-07-01"
    header_part, claims_part, _ = record.token.split(".")
    header = json.loads(b64url_decode(header_part))
    assert header == {"alg": "EdDSA", "kid": W.device.key_id, "typ": RECORD_TYP}
    assert b64url_decode(claims_part) == json.dumps(
        c.to_json(), separators=(",", ":"), sort_keys=True
    ).encode("ascii")


def test_any_jwt_library_verifies_a_record() -> None:
    record = sign_record(claims(), W.device)
    decoded = jwt.decode(
        record.token,
        W.device.public_key.to_cryptography(),
        algorithms=["EdDSA"],
        options={"verify_iat": False},
    )
    assert decoded == claims().to_json()
    assert jwt.get_unverified_header(record.token)["typ"] == "ul-offline+jwt"


def _mutations(token: str) -> list[str]:
    """Every single-character change of ``token``: each position replaced by a neighbour
    character, by a character of another class, by a dot, and deleted."""
    out = []
    for i, ch in enumerate(token):
        for other in {chr(ord(ch) ^ 1), "A" if ch != "A" else "B", "-", ".", "="} - {ch}:
            out.append(token[:i] + other + token[i + 1 :])
        out.append(token[:i] + token[i + 1 :])
    return out


def test_every_character_mutation_is_refused_with_a_specific_error() -> None:
    token = sign_record(claims(), W.device).token
    codes: dict[str, int] = {}
    mutations = _mutations(token)
    assert len(mutations) > 5 * len(token)
    for mutated in mutations:
        with pytest.raises(StationRecordError) as info:
            verify(mutated)
        assert type(info.value) is not StationRecordError, mutated
        codes[info.value.code] = codes.get(info.value.code, 0) + 1
    assert set(codes) == {"record-malformed", "record-bad-signature", "record-unknown-key"}


def test_every_bit_flip_of_the_signed_bytes_is_refused() -> None:
    """Flip each bit of the decoded header, claims and signature, re-encode: refused."""
    token = sign_record(claims(), W.device).token
    parts = [b64url_decode(p) for p in token.split(".")]
    for which, raw in enumerate(parts):
        for i in range(len(raw)):
            for bit in (1, 2, 4, 8, 16, 32, 64, 128):
                changed = bytearray(raw)
                changed[i] ^= bit
                pieces = [b64url_encode(p) for p in parts]
                pieces[which] = b64url_encode(bytes(changed))
                with pytest.raises(StationRecordError) as info:
                    verify(".".join(pieces))
                assert type(info.value) is not StationRecordError


def forge(header: object, body: bytes | object, key: PrivateKey | None = None) -> str:
    """A token over any header and claims (bytes as they are, else canonical-ish JSON),
    validly signed: only the structure checks can refuse it."""
    h = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    b = (
        body
        if isinstance(body, bytes)
        else json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    )
    signing_input = b64url_encode(h) + "." + b64url_encode(b)
    return signing_input + "." + b64url_encode((key or W.device).sign(signing_input.encode()))


HEADER = {"alg": "EdDSA", "kid": W.device.key_id, "typ": RECORD_TYP}


@pytest.mark.parametrize(
    ("header", "body"),
    [
        ({**HEADER, "typ": "JWT"}, claims().to_json()),
        ({**HEADER, "alg": "none"}, claims().to_json()),
        ({**HEADER, "crit": ["exp"]}, claims().to_json()),
        ({"alg": "EdDSA", "typ": RECORD_TYP}, claims().to_json()),
        ({**HEADER, "kid": "short"}, claims().to_json()),
        ([HEADER], claims().to_json()),
        (HEADER, json.dumps(claims().to_json()).encode()),  # spaces: not canonical
        (
            HEADER,
            json.dumps(claims().to_json(), separators=(",", ":")).encode()[:-1] + b',"seq":1}',
        ),
        (HEADER, {k: v for k, v in claims().to_json().items() if k != "clk"}),
        (HEADER, {**claims().to_json(), "exp": 1}),
        (HEADER, {**claims().to_json(), "seq": 0}),
        (HEADER, {**claims().to_json(), "seq": True}),
        (HEADER, {**claims().to_json(), "quantity": 0}),
        (HEADER, {**claims().to_json(), "quantity": 1001}),
        (HEADER, {**claims().to_json(), "value": -1}),
        (HEADER, {**claims().to_json(), "version": "1"}),
        (HEADER, {**claims().to_json(), "iat": str(int(T0.timestamp()))}),
        (HEADER, {**claims().to_json(), "member": "AAAA"}),
        (HEADER, {**claims().to_json(), "presentation": "not base64url!"}),
        (HEADER, {**claims().to_json(), "prev": GENESIS + "A"}),
        (HEADER, {**claims().to_json(), "station": " ST"}),
        (HEADER, {**claims().to_json(), "home": None}),
        (HEADER, b"[]"),
        (HEADER, b'{"seq":1.0}'),
    ],
)
def test_validly_signed_but_malformed_records_are_refused(header: object, body: object) -> None:
    with pytest.raises(RecordMalformed):
        verify(forge(header, body))


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "é.a.a", "x" * 5000, "...", None, 7])
def test_garbage_is_malformed(token: Any) -> None:
    with pytest.raises(RecordMalformed):
        verify(token)


def test_sign_record_refuses_claims_it_could_not_verify() -> None:
    for bad in (claims(seq=0), claims(quantity=0), claims(member="x"), claims(station="a b")):
        with pytest.raises(ValueError, match="record claim"):
            sign_record(bad, W.device)


def test_keys_unknown_of_another_station_or_of_another_role_are_refused() -> None:
    token = sign_record(claims(), W.device).token
    with pytest.raises(RecordUnknownKey):
        verify_record(token, {}, expected_station=STATION, now=T0)
    b_token = sign_record(claims(), W.other_device).token
    with pytest.raises(RecordUnknownKey):  # a key of station B cannot sign A's records
        verify_record(b_token, {**W.keys_a, **W.keys_b}, expected_station=STATION, now=T0)
    as_issuer = dataclasses.replace(W.device_rec, role=Role.ISSUER)
    with pytest.raises(RecordUnknownKey):
        verify_record(token, {W.device.key_id: as_issuer}, expected_station=STATION, now=T0)
    with pytest.raises(RecordUnknownKey):  # the map's key must be the record's own kid
        verify_record(token, {W.device.key_id: W.device2_rec}, expected_station=STATION, now=T0)


def test_a_record_naming_another_station_is_refused() -> None:
    token = sign_record(claims(station=OTHER), W.device).token
    with pytest.raises(RecordWrongStation):
        verify(token)


def test_a_revoked_key_verifies_what_it_signed_before_the_revocation_only() -> None:
    record = sign_record(claims(), W.device)  # iat = T0 + 60 s
    iat = record.claims.time
    revoked_after = {
        W.device.key_id: dataclasses.replace(W.device_rec, revoked_at=iat + timedelta(seconds=1))
    }
    assert verify_record(record.token, revoked_after, expected_station=STATION, now=T0 + DAY)
    revoked_at = {W.device.key_id: dataclasses.replace(W.device_rec, revoked_at=iat)}
    with pytest.raises(RecordKeyRevoked, match="revoked"):
        verify_record(record.token, revoked_at, expected_station=STATION, now=T0 + DAY)
    later = {W.device.key_id: dataclasses.replace(W.device_rec, not_before=iat + DAY)}
    with pytest.raises(RecordKeyRevoked, match="valid from"):
        verify_record(record.token, later, expected_station=STATION, now=T0 + DAY)
    # A trust list's station keys serve as well as the registry's.
    trust = verify_trust_list(W.trust_token(T0), W.root_key.public_key, T0)
    from_trust = station_key_records(trust, STATION)
    assert set(from_trust) == {W.device.key_id, W.device2.key_id}
    assert verify_record(record.token, from_trust, expected_station=STATION, now=T0 + DAY)


def test_clock_skew_within_the_leeway_is_accepted_beyond_it_refused() -> None:
    record = sign_record(claims(), W.device)
    iat = record.claims.time
    skew = timedelta(minutes=5)
    assert verify(record.token, now=iat - skew, max_skew=skew)
    with pytest.raises(RecordClockSkew, match="future"):
        verify(record.token, now=iat - skew - timedelta(seconds=1), max_skew=skew)
    assert verify(record.token, now=iat - timedelta(seconds=10), max_skew=timedelta(seconds=10))
    with pytest.raises(RecordClockSkew):
        verify(record.token, now=iat - timedelta(seconds=11), max_skew=timedelta(seconds=10))


# -- batches -----------------------------------------------------------------------------------


def batch(tokens: list[str], previous_seq: int = 0, previous_hash: str = GENESIS, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "station_keys": W.keys_a,
        "expected_station": STATION,
        "now": T0 + DAY,
    }
    args.update(kw)
    return verify_batch(tokens, previous_seq, previous_hash, **args)


def tokens(records: list[OfflineRecord]) -> list[str]:
    return [r.token for r in records]


def test_a_valid_chain_is_accepted_and_continues_in_the_next_batch() -> None:
    records = chain(6)
    first = batch(tokens(records[:3]))
    assert first.ok
    assert [r.seq for r in first.accepted] == [1, 2, 3]
    last = first.accepted[-1]
    second = batch(
        tokens(records[3:]), last.seq, last.hash, previous_time=last.claims.iat, kid=last.kid
    )
    assert second.ok
    assert [r.seq for r in second.accepted] == [4, 5, 6]
    assert batch([]).ok


def failure_of(result: Any) -> tuple[int, int | None, type[Exception]]:
    assert result.failure is not None
    return result.failure.index, result.failure.seq, type(result.failure.error)


def test_a_gap_is_reported_at_the_record_after_it() -> None:
    records = chain(5)
    result = batch(tokens([records[0], records[1], records[3], records[4]]))
    assert failure_of(result) == (2, 4, RecordGap)
    assert [r.seq for r in result.accepted] == [1, 2]
    assert "seq 3 missing" in str(result.failure)
    # A deleted tail shows as a gap when the next batch arrives.
    result = batch(tokens(records[4:]), 3, records[2].hash)
    assert failure_of(result) == (0, 5, RecordGap)
    assert result.failure is not None
    assert result.failure.code == "record-gap"


def test_a_duplicate_a_resend_and_a_fork_are_reported() -> None:
    records = chain(4)
    result = batch(tokens([records[0], records[1], records[1], records[2]]))
    assert failure_of(result) == (2, 2, RecordDuplicate)
    assert "sent already" in str(result.failure)
    # The server has 1..3; the station sends 3 again.
    result = batch(tokens(records[2:]), 3, records[2].hash)
    assert failure_of(result) == (0, 3, RecordDuplicate)
    # Another record with seq 2, validly signed: a fork (cloned device, reset queue).
    fork = sign_record(claims(2, records[0].hash, quantity=1, value=4999), W.device)
    result = batch([*tokens(records[:2]), fork.token])
    assert failure_of(result) == (2, 2, RecordDuplicate)
    assert "forked" in str(result.failure)


def test_reordered_records_are_reported_as_such() -> None:
    records = chain(5)
    result = batch(tokens([records[0], records[1], records[3], records[2], records[4]]))
    assert failure_of(result) == (2, 4, RecordReordered)
    result = batch(tokens([records[1], records[0]]))
    assert failure_of(result) == (0, 2, RecordReordered)


def test_a_tampered_record_is_reported_and_nothing_after_it_accepted() -> None:
    records = chain(4)
    header, body, signature = records[2].token.split(".")
    doctored = dict(json.loads(b64url_decode(body)), quantity=3, value=15000)
    body = b64url_encode(json.dumps(doctored, separators=(",", ":"), sort_keys=True).encode())
    result = batch([records[0].token, records[1].token, f"{header}.{body}.{signature}"])
    assert failure_of(result) == (2, 3, RecordSignatureInvalid)
    assert len(result.accepted) == 2


def test_a_replaced_record_breaks_the_chain_at_its_successor() -> None:
    records = chain(4)
    replaced = sign_record(claims(3, records[1].hash, value=1), W.device)  # validly signed
    result = batch([*tokens(records[:2]), replaced.token, records[3].token])
    assert failure_of(result) == (3, 4, RecordChainBroken)
    assert "altered, replaced or deleted" in str(result.failure)
    result = batch(tokens(records[:2]), 0, records[0].hash)  # the server holds another head
    assert failure_of(result) == (0, 1, RecordChainBroken)
    result = batch(tokens(records[2:]), 2, records[0].hash)
    assert failure_of(result) == (0, 3, RecordChainBroken)


def test_another_device_of_the_same_station_has_its_own_chain() -> None:
    mine, theirs = chain(2), chain(2, key=W.device2)
    assert batch(tokens(theirs)).ok
    result = batch([*tokens(mine), theirs[1].token])
    assert failure_of(result) == (2, 2, RecordChainBroken)
    result = batch(tokens(theirs), kid=W.device.key_id)
    assert failure_of(result) == (0, 1, RecordChainBroken)


def test_a_replayed_presentation_is_reported() -> None:
    first = chain(2)
    again = sign_record(
        claims(3, first[1].hash, presentation=first[0].claims.presentation), W.device
    )
    result = batch([*tokens(first), again.token])
    assert failure_of(result) == (2, 3, RecordReplayed)
    known = {first[1].claims.presentation}
    result = batch(tokens(first), known_presentations=known)
    assert failure_of(result) == (1, 2, RecordReplayed)


def test_clock_skew_within_a_batch() -> None:
    t = int(T0.timestamp())
    r1 = sign_record(claims(1, iat=t), W.device)
    back_300 = sign_record(claims(2, r1.hash, iat=t - 300), W.device)
    back_301 = sign_record(claims(2, r1.hash, iat=t - 301), W.device)
    assert batch([r1.token, back_300.token]).ok
    result = batch([r1.token, back_301.token])
    assert failure_of(result) == (1, 2, RecordClockSkew)
    assert batch([r1.token], previous_time=t + 300).ok
    result = batch([r1.token], previous_time=t + 301)
    assert failure_of(result) == (0, 1, RecordClockSkew)
    future = sign_record(claims(1, iat=t + 400), W.device)
    result = batch([future.token], now=T0)
    assert failure_of(result) == (0, 1, RecordClockSkew)


def test_an_unreadable_record_is_reported_without_a_seq() -> None:
    records = chain(2)
    result = batch([records[0].token, "not a record"])
    assert failure_of(result) == (1, None, RecordMalformed)
    assert "unreadable seq" in str(result.failure)


# -- the policy ----------------------------------------------------------------------------------

DOCS_EXAMPLE_RULES = {
    # docs/programs.md section 2, the stored form of the worked example.
    "allocations": {"440000": 100000000},
    "budget": 500000000,
    "eligibility": {"groups_any": [], "home_subtree": None, "min_tenure_days": None},
    "kind": "universal",
    "max_quantity": 1,
    "name": "2027 送清凉 summer cooling pack",
    "no_stack_with": [],
    "offline": {"allowed": True, "per_member_per_day": 1, "station_daily_value": 200000},
    "period": {"from": "2027-06-01", "until": "2027-08-31"},
    "quota": {"count": 1, "per": "program"},
    "unit_value": 5000,
    "where": {
        "station_kinds": ["truck_driver_home", "union_station"],
        "stations": [],
        "subtree": None,
    },
}


def test_the_policy_reads_the_stored_rules() -> None:
    policy = OfflinePolicy.from_rules("NAT-2027-SUMMER", 1, DOCS_EXAMPLE_RULES)
    assert (policy.allowed, policy.per_member_per_day, policy.station_daily_value) == (
        True,
        1,
        200000,
    )
    assert (policy.start, policy.until) == (date(2027, 6, 1), date(2027, 8, 31))
    assert policy.station_kinds == {"truck_driver_home", "union_station"}
    assert policy.member_daily_limit == 1
    assert policy.daily_worst_case == 200000
    meal = POLICIES["MEAL"]
    assert meal.member_daily_limit == 3
    assert meal.daily_worst_case == 6000
    assert POLICIES["WATER"].daily_worst_case == 0
    assert POLICIES["GIFT"].daily_worst_case == 0
    capped = OfflinePolicy.from_rules(
        "P", 1, rules(quota={"count": 2, "per": "week"}, offline={"per_member_per_day": 5})
    )
    assert capped.member_daily_limit == 2, "no day may exceed the quota"
    odd = OfflinePolicy.from_rules(
        "P", 1, rules(unit_value=3000, offline={"station_daily_value": 10000})
    )
    assert odd.daily_worst_case == 9000
    # Absent or null members take the parser's defaults.
    bare = {k: v for k, v in BASE_RULES.items() if k not in ("offline", "where", "eligibility")}
    policy = OfflinePolicy.from_rules("P", 1, {**bare, "where": None})
    assert not policy.allowed
    assert policy.stations == policy.station_kinds == policy.groups_any == frozenset()


@pytest.mark.parametrize(
    "changes",
    [
        {"offline": {"allowed": "yes"}},
        {"offline": {"per_member_per_day": 0}},
        {"offline": {"per_member_per_day": 1.0}},
        {"offline": {"station_daily_value": -1}},
        {"unit_value": None},
        {"max_quantity": 0},
        {"quota": {"count": 0}},
        {"quota": {"per": "year"}},
        {"period": {"from": "2027-02-30"}},
        {"period": {"until": "27-08-31"}},
        {"period": None},
        {"where": {"stations": "ST-1"}},
        {"where": ["x"]},
        {"eligibility": {"groups_any": [1]}},
        {"eligibility": {"min_tenure_days": -1}},
        {"eligibility": {"home_subtree": 440000}},
        {"name": None},
    ],
)
def test_malformed_rules_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(StationCacheError):
        OfflinePolicy.from_rules("P", 1, rules(**changes))


def test_malformed_provisioning_is_refused() -> None:
    items: list[Any] = [
        {"program": "P", "version": "1", "rules": BASE_RULES},
        {"program": "bad id", "version": 1, "rules": BASE_RULES},
        {"program": "P", "version": 0, "rules": BASE_RULES},
        {"program": "P", "version": 1, "rules": []},
        [],
    ]
    for item in items:
        with pytest.raises(StationCacheError):
            OfflinePolicy.from_json(item)
    twice = [{"program": "P", "version": 1, "rules": BASE_RULES}] * 2
    with pytest.raises(StationCacheError, match="twice"):
        CACHE.with_programs(twice, T0)


def test_station_info_checks_its_members() -> None:
    with pytest.raises(ValueError, match="station id"):
        StationInfo("bad id", "union_station")
    with pytest.raises(ValueError, match="daily_ceiling"):
        StationInfo(STATION, "union_station", daily_ceiling=-1)


# -- decide --------------------------------------------------------------------------------------


def decision(
    program: str = "COOL",
    member: str = "rider",
    *,
    counters: LocalCounters | None = None,
    quantity: int = 1,
    at: datetime = T0,
    station: StationInfo = A_INFO,
    policy: OfflinePolicy | None = None,
) -> Accept | Refusal:
    return decide(  # the presentation verified at T0; decide() judges it at ``at``
        verified(member, program),
        policy or POLICIES[program],
        counters or LocalCounters(),
        station=station,
        quantity=quantity,
        now=at,
    )


def refused(result: Accept | Refusal) -> str:
    assert isinstance(result, Refusal), result
    assert result.code in REFUSAL_CODES
    assert result.message
    return result.code


def test_decide_accepts_with_the_record_to_sign() -> None:
    p = verified("courier", "MEAL")
    result = decide(
        p,
        POLICIES["MEAL"],
        LocalCounters(member_units=1, program_value=1500, station_value=1500),
        station=A_INFO,
        quantity=2,
        now=T0,
        clock=T0 - timedelta(seconds=7),
    )
    assert isinstance(result, Accept)
    assert result.accepted
    r = result.redemption
    assert (r.station, r.program, r.version, r.quantity, r.value) == (STATION, "MEAL", 1, 2, 3000)
    assert (r.member, r.home) == (p.member_id, HOME)
    assert r.presentation == b64url_encode(p.presentation_hash)
    assert (r.iat, r.clk) == (int(T0.timestamp()), int(T0.timestamp()) - 7)
    assert r.day == "2027-07-01"
    assert r.replay_until == int(T0.timestamp()) + 2 * 86400
    c = r.claims(5, GENESIS)
    assert (c.seq, c.prev, c.value, c.iat) == (5, GENESIS, 3000, r.iat)
    assert sign_record(c, W.device).claims == c
    # The remaining quota, counting this redemption (what the verdict shows).
    meal = POLICIES["MEAL"]
    assert result.remaining == OfflineRemaining(
        units=meal.member_daily_limit - 3,
        limit=meal.member_daily_limit,
        program_value=meal.station_daily_value - 4500,
        station_value=None,
        renews_at="2027-07-01T16:00:00Z",
    )


def test_offline_remaining_counts_the_limits_and_never_goes_below_zero() -> None:
    cool = POLICIES["COOL"]
    capped = StationInfo(STATION, "union_station", daily_ceiling=8000)
    fresh = offline_remaining(cool, LocalCounters(), station=capped, now=T0)
    assert (fresh.units, fresh.limit, fresh.program_value, fresh.station_value) == (
        cool.member_daily_limit,
        cool.member_daily_limit,
        cool.station_daily_value,
        8000,
    )
    spent = LocalCounters(member_units=9, program_value=10**9, station_value=9000)
    over = offline_remaining(cool, spent, station=capped, now=T0)
    assert (over.units, over.program_value, over.station_value) == (0, 0, 0)
    assert over.to_json()["renews_at"] == "2027-07-01T16:00:00Z"
    accepted = decide(verified(), cool, LocalCounters(), station=capped, quantity=1, now=T0)
    assert isinstance(accepted, Accept)
    assert accepted.remaining is not None
    assert (accepted.remaining.units, accepted.remaining.station_value) == (
        cool.member_daily_limit - 1,
        8000 - 5000,
    )
    gift = offline_remaining(POLICIES["GIFT"], LocalCounters(), station=A_INFO, now=T0)
    assert (gift.units, gift.limit) == (0, 0)  # not redeemable offline at all


def test_signatures_checked_ahead_change_no_verdict() -> None:
    """check_signatures keeps only records whose form and signature verify; with its answer
    (presigned), verify_record and verify_batch decide exactly as without it, with the key
    records they are given (a key revoked since is still refused)."""
    records = chain(4)
    genuine = tokens(records)
    mutated = _mutations(genuine[0])[::7]
    ahead = check_signatures([*genuine, *mutated, 42, None], W.keys_a)
    assert set(ahead) == set(genuine)
    assert ahead[genuine[1]].hash == records[1].hash
    assert all(ahead[t].claims == r.claims for t, r in zip(genuine, records, strict=True))
    for token in [*genuine, *mutated]:
        outcomes = []
        for presigned in (None, ahead):
            try:
                outcomes.append(verify(token, presigned=presigned))
            except StationRecordError as e:
                outcomes.append(type(e))
        assert outcomes[0] == outcomes[1], token
    iat = records[1].claims.time
    revoked = {W.device.key_id: dataclasses.replace(W.device_rec, revoked_at=iat)}
    with pytest.raises(RecordKeyRevoked):
        verify_record(genuine[1], revoked, expected_station=STATION, now=T0 + DAY, presigned=ahead)
    with pytest.raises(RecordUnknownKey):  # another station's keys: still checked
        verify_record(genuine[1], W.keys_b, expected_station=STATION, now=T0 + DAY, presigned=ahead)
    for sent in (genuine, [genuine[0], genuine[2]], [genuine[1], genuine[0]], [mutated[0]]):
        plain, fast = batch(sent), batch(sent, presigned=ahead)
        assert plain.accepted == fast.accepted
        assert (plain.failure is None) == (fast.failure is None)
        if plain.failure is not None:
            assert str(plain.failure) == str(fast.failure)


def test_decide_refuses_for_each_reason() -> None:
    t = int(T0.timestamp())
    assert refused(decision(counters=LocalCounters(last_time=t + 301))) == "station-clock-behind"
    assert decision(counters=LocalCounters(last_time=t + 300)).accepted
    assert refused(decision(counters=LocalCounters(replayed=True))) == "replayed"
    assert refused(decision("GIFT")) == "offline-not-allowed"
    assert refused(decision("AUTUMN")) == "program-not-open"
    assert refused(decision("DRIVERS")) == "not-redeemable-here"
    truck = StationInfo(OTHER, "truck_driver_home")
    assert decision("DRIVERS", station=truck).accepted
    only_b = OfflinePolicy.from_rules("P", 1, rules(where={"stations": [OTHER]}))
    assert refused(decision(policy=only_b)) == "not-redeemable-here"
    assert decision(policy=only_b, station=truck).accepted
    assert refused(decision(quantity=2)) == "invalid-quantity"
    assert refused(decision(quantity=0)) == "invalid-quantity"
    assert refused(decision(quantity=True)) == "invalid-quantity"
    assert refused(decision("TENURE")) == "offline-cannot-judge"
    home = OfflinePolicy.from_rules(
        "P", 1, rules(kind="targeted", eligibility={"home_subtree": PROVINCE})
    )
    assert refused(decision(policy=home)) == "offline-cannot-judge"
    assert refused(decision("MEAL", "plain")) == "not-eligible"
    assert decision("MEAL", "rider").accepted
    assert decision("MEAL", "courier").accepted  # any one of groups_any
    limit = decision(counters=LocalCounters(member_units=1))
    assert refused(limit) == "offline-member-limit"
    assert isinstance(limit, Refusal)
    assert limit.extra == {"used": 1, "limit": 1, "renews_at": "2027-07-01T16:00:00Z"}
    assert decision("MEAL", counters=LocalCounters(member_units=2)).accepted
    assert refused(decision("MEAL", counters=LocalCounters(member_units=2), quantity=2)) == (
        "offline-member-limit"
    )
    ceiling = decision(counters=LocalCounters(program_value=5001))
    assert refused(ceiling) == "offline-station-ceiling"
    assert isinstance(ceiling, Refusal)
    assert ceiling.extra["scope"] == "program"
    assert ceiling.extra["left"] == 4999
    assert decision(counters=LocalCounters(program_value=5000)).accepted
    capped = StationInfo(STATION, "union_station", daily_ceiling=8000)
    whole = decision(counters=LocalCounters(station_value=3001), station=capped)
    assert refused(whole) == "offline-station-ceiling"
    assert isinstance(whole, Refusal)
    assert whole.extra["scope"] == "station"
    assert decision(counters=LocalCounters(station_value=3000), station=capped).accepted
    # Value 0: the ceilings never bind, the member limit does.
    assert decision("WATER", quantity=2, counters=LocalCounters(member_units=3)).accepted
    assert refused(decision("WATER", counters=LocalCounters(member_units=5))) == (
        "offline-member-limit"
    )


def test_the_first_failing_check_decides() -> None:
    everything = LocalCounters(
        member_units=9, program_value=10**9, station_value=10**9, replayed=True
    )
    assert refused(decision("GIFT", counters=everything)) == "replayed"
    assert refused(decision("GIFT", counters=everything._replace(replayed=False))) == (
        "offline-not-allowed"
    )
    assert refused(decision("COOL", counters=everything._replace(replayed=False))) == (
        "offline-member-limit"
    )


def test_the_day_is_the_china_date() -> None:
    opens = datetime(2027, 6, 1, tzinfo=CHINA)  # 2027-05-31T16:00:00Z
    assert refused(decision(at=opens - timedelta(seconds=1))) == "program-not-open"
    assert decision(at=opens).accepted
    closes = datetime(2027, 9, 1, tzinfo=CHINA)
    assert decision(at=closes - timedelta(seconds=1)).accepted
    assert refused(decision(at=closes)) == "program-not-open"
    late = datetime(2027, 7, 1, 23, 59, 59, tzinfo=CHINA)
    assert china_day(late) == "2027-07-01"
    assert china_day(late + timedelta(seconds=1)) == "2027-07-02"
    assert china_day(int(late.timestamp()) + 1) == "2027-07-02"
    result = decision(at=late, counters=LocalCounters(member_units=1))
    assert isinstance(result, Refusal)
    assert result.extra["renews_at"] == "2027-07-01T16:00:00Z"


# -- judge and the cache -----------------------------------------------------------------------


def no_counters(member: str, program: str, day: str, presentation: str) -> LocalCounters:
    return LocalCounters()


def judged(
    text: str, *, program: str = "COOL", cache: StationCache = CACHE, at: datetime = T0
) -> Accept | Refusal:
    return judge(text, program=program, quantity=1, cache=cache, counters=no_counters, now=at)


def test_judge_verifies_then_decides() -> None:
    seen: list[tuple[str, str, str, str]] = []

    def counters(member: str, program: str, day: str, presentation: str) -> LocalCounters:
        seen.append((member, program, day, presentation))
        return LocalCounters(member_units=0)

    text = W.members["rider"].present("COOL", T0)
    result = judge(text, program="COOL", quantity=1, cache=CACHE, counters=counters, now=T0)
    assert isinstance(result, Accept)
    p = verified()
    assert seen == [(p.member_id, "COOL", "2027-07-01", b64url_encode(p.presentation_hash))]


def test_judge_refuses_a_program_not_provisioned_or_not_offline() -> None:
    text = W.members["rider"].present("COOL", T0)
    assert refused(judged(text, program="NOPE")) == "offline-not-allowed"
    assert refused(judged(text, program="GIFT")) == "offline-not-allowed"


def test_judge_refuses_a_presentation_with_the_verifiers_reason() -> None:
    revoked = judged(W.members["revoked"].present("COOL", T0))
    assert refused(revoked) == "presentation-refused"
    assert isinstance(revoked, Refusal)
    assert revoked.extra == {"reason": "credential-revoked", "step": 6}
    old = judged(W.members["rider"].present("COOL", T0 - timedelta(seconds=121)))
    assert isinstance(old, Refusal)
    assert (old.code, old.extra["reason"]) == ("presentation-refused", "holder-proof-stale")
    assert judged(W.members["rider"].present("COOL", T0 - timedelta(seconds=120))).accepted
    garbage = judged("UL1:XYZ")
    assert isinstance(garbage, Refusal)
    assert garbage.extra["reason"] == "credential-malformed"


def test_stale_items_are_never_silently_trusted() -> None:
    text_at = W.members["rider"].present
    # Status lists and programs: one day; the trust list: two days (MaxAges defaults).
    at = T0 + DAY - timedelta(seconds=1)
    assert judged(text_at("COOL", at), at=at).accepted
    at = T0 + DAY
    result = judged(text_at("COOL", at), at=at)
    assert refused(result) == "stale-cache"
    assert isinstance(result, Refusal)
    assert result.extra == {"item": "programs"}
    # Fresh programs, the status list a day old: the member's issuer's list is stale.
    cache = CACHE.with_programs(CACHE_PROGRAMS, at)
    result = judged(text_at("COOL", at), cache=cache, at=at)
    assert isinstance(result, Refusal)
    assert (result.code, result.extra["reason"]) == ("stale-cache", "status-list-missing")
    assert "status list" in result.message
    cache = cache.with_status_list(W.status_token(at), at)
    assert judged(text_at("COOL", at), cache=cache, at=at).accepted
    # Two days: the trust list (fetched at T0) is stale even with fresh lists and programs.
    at = T0 + 2 * DAY
    cache = cache.with_programs(CACHE_PROGRAMS, at).with_status_list(W.status_token(at), at)
    result = judged(text_at("COOL", at), cache=cache, at=at)
    assert isinstance(result, Refusal)
    assert (result.code, result.extra["item"]) == ("stale-cache", "trust list")
    cache = cache.with_trust_list(W.trust_token(at), W.root_key.public_key, at)
    assert judged(text_at("COOL", at), cache=cache, at=at).accepted
    # No status list at all for the issuer.
    empty = StationCache.provision(
        station=A_INFO,
        trust_list=W.trust_token(T0),
        roots=W.root_key.public_key,
        status_lists=[],
        programs=CACHE_PROGRAMS,
        now=T0,
    )
    result = judged(text_at("COOL", T0), cache=empty)
    assert isinstance(result, Refusal)
    assert (result.code, result.extra["reason"]) == ("stale-cache", "status-list-missing")


CACHE_PROGRAMS = [{"program": p, "version": 1, "rules": r} for p, r in PROGRAMS.items()]


def test_a_status_list_ages_from_its_signature_and_its_ttl() -> None:
    # Fetched now, but signed 20 hours ago: good for 4 more hours only (ttl one day).
    signed = T0 - timedelta(hours=20)
    cache = CACHE.with_status_list(W.status_token(signed), T0)
    item = cache.status_list_item(PROVINCE, T0)
    assert item is not None
    assert item.good_until == signed + DAY
    assert not item.stale
    later = cache.status_list_item(PROVINCE, T0 + timedelta(hours=4))
    assert later is not None
    assert later.stale
    stricter = W.cache(T0, max_ages=MaxAges(status_list=timedelta(hours=2)))
    item = stricter.status_list_item(PROVINCE, T0 + timedelta(hours=2))
    assert item is not None
    assert item.stale
    assert CACHE.status_list_item("999999", T0) is None


def test_the_staleness_report_in_plain_words() -> None:
    report = CACHE.staleness(T0 + timedelta(hours=1))
    assert report.ok
    assert [i.name for i in report.items] == [
        "trust list",
        "status list of union 440000",
        "programs",
    ]
    assert str(report).splitlines() == [
        "trust list: fresh: fetched 2027-07-01 12:00 China time, good until 2027-07-03 12:00"
        " China time (1 day 23 hours left)",
        "status list of union 440000: fresh: fetched 2027-07-01 12:00 China time, good until"
        " 2027-07-02 12:00 China time (23 hours left)",
        "programs: fresh: fetched 2027-07-01 12:00 China time, good until 2027-07-02 12:00"
        " China time (23 hours left)",
    ]
    report = CACHE.staleness(T0 + timedelta(days=1, minutes=30))
    assert not report.ok
    assert [i.name for i in report.stale] == ["status list of union 440000", "programs"]
    assert report.items[2].words == (
        "programs: STALE (since 2027-07-02 12:00 China time; fetched 2027-07-01 12:00 China"
        " time): connect to refresh it; until then no program can be redeemed offline"
    )
    assert "credentials issued by union 440000 are refused" in report.items[1].words
    # A clock set back before the fetch: nothing can be judged.
    report = CACHE.staleness(T0 - timedelta(hours=2))
    assert [i.stale for i in report.items] == [True, True, True]
    assert "after this station's clock" in report.items[0].words
    assert "check the clock" in report.items[0].words
    text = W.members["rider"].present("COOL", T0 - timedelta(hours=2))
    assert refused(judged(text, at=T0 - timedelta(hours=2))) == "stale-cache"


def test_the_worst_case_per_day_is_a_known_constant() -> None:
    # COOL 10,000 + MEAL 6,000 + DRIVERS 10,000 + TENURE 10,000 + AUTUMN 10,000; WATER and
    # GIFT 0: what the policies allow, whether or not each can be redeemed today.
    assert CACHE.worst_case_daily_value() == 46000
    capped = W.cache(T0, StationInfo(STATION, "union_station", daily_ceiling=20000))
    assert capped.worst_case_daily_value() == 20000


# -- the documentation -------------------------------------------------------------------------

EX_DEVICE = PrivateKey.from_seed(bytes(range(32)))  # docs/auth.md's test device
EX_STATION = "ST-BJ-0001"
EX_TIME = datetime(2027, 7, 15, 6, 30, 0, tzinfo=UTC)  # 14:30 China time


def example_records() -> list[OfflineRecord]:
    base = RecordClaims(
        station=EX_STATION,
        seq=1,
        prev=GENESIS,
        program="NAT-2027-SUMMER",
        version=2,
        quantity=1,
        value=6000,
        presentation=b64url_encode(hashlib.sha256(b"example presentation 1").digest()),
        member="AAECAwQFBgcICQoLDA0ODw",
        home="110105-0003",
        iat=int(EX_TIME.timestamp()),
        clk=int(EX_TIME.timestamp()) - 42,
    )
    first = sign_record(base, EX_DEVICE)
    second = sign_record(
        dataclasses.replace(
            base,
            seq=2,
            prev=first.hash,
            program="NAT-YIZHAN-WATER",
            version=1,
            quantity=2,
            value=0,
            presentation=b64url_encode(hashlib.sha256(b"example presentation 2").digest()),
            member="EBESExQVFhcYGRobHB0eHw",
            home="110105-0007",
            iat=base.iat + 95,
            clk=base.clk + 95,
        ),
        EX_DEVICE,
    )
    return [first, second]


def _fence(text: str) -> list[str]:
    return ["```", text, "```"]


def example_section() -> str:
    first, second = example_records()
    lines = [
        f"The device key: seed `{EX_DEVICE.seed().hex()}` (the test device of auth.md),"
        f" kid `{EX_DEVICE.key_id}`, station `{EX_STATION}`. Record 1, at"
        f" {EX_TIME.strftime('%Y-%m-%dT%H:%M:%SZ')} (14:30 China time; the device clock 42 s"
        " behind; the presentation hashes are SHA-256 of the ASCII stand-ins"
        " `example presentation 1` and `2`):",
        "",
    ]
    for record in (first, second):
        header, body, signature = record.token.split(".")
        if record is second:
            lines += [
                "",
                "Record 2, 95 seconds later, two waters for another member; its `prev` is"
                " record 1's hash:",
                "",
            ]
        lines += [
            "Header (canonical JSON):",
            "",
            *_fence(b64url_decode(header).decode()),
            "",
            "Claims (canonical JSON):",
            "",
            *_fence(b64url_decode(body).decode()),
            "",
            f"The token ({len(record.token)} characters on one line; shown here broken before"
            " each dot):",
            "",
            *_fence(f"{header}\n.{body}\n.{signature}"),
            "",
            "Its hash, base64url(SHA-256(token)):",
            "",
            *_fence(record.hash),
        ]
    return "\n".join(lines)


def staleness_section() -> str:
    return "\n".join(_fence(str(CACHE.staleness(T0 + DAY + timedelta(minutes=30)))))


def generated_sections() -> dict[str, str]:
    return {"record-example": example_section(), "staleness-example": staleness_section()}


def _marked(name: str) -> tuple[str, str]:
    return f"<!-- generated: {name} -->\n\n", f"\n\n<!-- end: {name} -->"


def doc_section(doc: str, name: str) -> str:
    begin, end = _marked(name)
    assert doc.count(begin) == 1, name
    assert doc.count(end) == 1, name
    return doc[doc.index(begin) + len(begin) : doc.index(end)]


def test_the_worked_example_verifies() -> None:
    first, second = example_records()
    record = keys.KeyRecord(
        kid=EX_DEVICE.key_id,
        role=Role.STATION,
        public_key=EX_DEVICE.public_key,
        not_before=EX_TIME - DAY,
        scope=EX_STATION,
    )
    result = verify_batch(
        [first.token, second.token],
        0,
        GENESIS,
        station_keys={record.kid: record},
        expected_station=EX_STATION,
        now=EX_TIME + DAY,
    )
    assert result.ok
    assert [r.claims for r in result.accepted] == [first.claims, second.claims]
    assert EX_DEVICE.key_id == "1IG2tMH7J2wbJZnOf8LJzQitKf7LMvoAElsuDMVM54Y"


def test_the_documentation_is_generated_from_the_code() -> None:
    """docs/station.md's example is this code's output, exactly. After a deliberate change,
    regenerate it: ``python -m tests.verifier.test_station``."""
    doc = DOC.read_text(encoding="utf-8")
    for name, text in generated_sections().items():
        assert doc_section(doc, name) == text, f"docs/station.md section {name} is stale"


def test_the_documentation_names_every_reason_and_error() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for code in REFUSAL_CODES:
        assert f"`{code}`" in doc, code
    record_errors = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, StationRecordError)
    ]
    assert len(record_errors) == 12
    for cls in record_errors:
        assert f"`{cls.code}`" in doc, cls
        assert f"`{cls.__name__}`" in doc, cls
    for text in (RECORD_TYP, GENESIS, "journal_mode=WAL", "synchronous=FULL"):
        assert text in doc, text


def write_doc_sections() -> None:
    """Rewrite the generated sections of docs/station.md in place."""
    doc = DOC.read_text(encoding="utf-8")
    for name, text in generated_sections().items():
        begin, end = _marked(name)
        doc = doc.replace(begin + doc_section(doc, name) + end, begin + text + end)
    DOC.write_text(doc, encoding="utf-8")


if __name__ == "__main__":
    write_doc_sections()


class _CountingKey:
    """A device public key that counts its verifications."""

    def __init__(self, key: Any) -> None:
        self.key, self.calls = key, 0
        self.key_id = key.key_id  # the key record checks its kid against it

    def verify(self, signature: bytes, message: bytes) -> None:
        self.calls += 1
        self.key.verify(signature, message)


def _counting_keys() -> tuple[dict[str, Any], _CountingKey]:
    counting = _CountingKey(W.device_rec.public_key)
    record = dataclasses.replace(W.device_rec, public_key=counting)  # type: ignore[arg-type]
    return {W.device.key_id: record}, counting


def test_a_chained_run_costs_one_signature_check() -> None:
    """check_signatures verifies the last token of each chained run: its signed prev fixes
    every token before it (each prev is the hash of the whole previous token)."""
    records = chain(50)
    station_keys, counting = _counting_keys()
    ahead = check_signatures(tokens(records), station_keys)
    assert set(ahead) == set(tokens(records))
    assert counting.calls == 1
    # Two chains (a gap in the middle): two runs, two checks.
    station_keys, counting = _counting_keys()
    ahead = check_signatures(tokens([*records[:10], *records[11:]]), station_keys)
    assert len(ahead) == 49
    assert counting.calls == 2


def test_a_run_whose_last_signature_fails_is_checked_token_by_token() -> None:
    """A doctored record breaks the chain at its successor (its hash changed) and its own
    signature fails; a run ending in a forged signature is verified record by record: only
    the genuine records come back, whatever their position."""
    records = chain(6)
    header, body, signature = records[5].token.split(".")
    forged_tip = f"{header}.{body}.{b64url_encode(bytes(64))}"
    station_keys, counting = _counting_keys()
    ahead = check_signatures([*tokens(records[:5]), forged_tip], station_keys)
    assert set(ahead) == set(tokens(records[:5]))
    assert counting.calls == 1 + 5
    header, body, signature = records[2].token.split(".")
    doctored = dict(json.loads(b64url_decode(body)), quantity=3, value=15000)
    body = b64url_encode(json.dumps(doctored, separators=(",", ":"), sort_keys=True).encode())
    sent = [*tokens(records[:2]), f"{header}.{body}.{signature}", *tokens(records[3:])]
    ahead = check_signatures(sent, _counting_keys()[0])
    assert set(ahead) == set(tokens(records[:2])) | set(tokens(records[3:]))
    result = batch(sent, presigned=ahead)
    assert failure_of(result) == (2, 3, RecordSignatureInvalid)  # as without ahead-checks
