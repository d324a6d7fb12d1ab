"""The station's offline client, pure part: the provisioned cache, offline decisions, and the
signed offline redemption records with their per-device hash chain.

A station device is provisioned online (:class:`StationCache`: the trust list, each issuer's
status list, the programs redeemable here with their offline policies, each with a maximum
age). Offline, it verifies a scanned QR presentation with the cached lists, using the same
:func:`verifier.credential.verify_presentation` as the server, and decides locally
(:func:`judge`, :func:`decide`) within bounded limits: units per member per program per day at
this station, value per program per day at this station, and optionally value per day at this
station across programs. An accepted redemption becomes an *offline record*
(:func:`sign_record`): a compact JWS signed by the device key, carrying the presentation hash,
the program, the quantity, the times and a per-device sequence number chained by ``prev``
hashes. The server checks a synced batch with :func:`verify_batch`. The durable queue that
holds the counters and records on the device is ``verifier/station_queue.py``.

``docs/station.md`` is the specification (the record byte by byte with a worked example that
the tests regenerate, the chain rules, the decision rules, the limits and the worst-case loss,
the staleness rules). The record, in short::

    BASE64URL(header) "." BASE64URL(claims) "." BASE64URL(Ed25519 signature)
    header: {"alg":"EdDSA","kid":<RFC 7638 id of the device key>,"typ":"ul-offline+jwt"}
    claims: {"clk","home","iat","member","prev","presentation","program","quantity","seq",
             "station","value","version"}   (canonical JSON, so one encoding per record)

Pure: keys, times and counters are passed in; nothing here touches the disk or the network.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, NamedTuple

import keys
from keys import b64url_decode, b64url_encode
from verifier.canonical import canonical_bytes, parse_canonical
from verifier.credential import VerifiedPresentation, verify_presentation
from verifier.errors import (
    CanonicalError,
    CredentialError,
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
    StatusListStale,
)
from verifier.statuslist import VerifiedStatusList, verify_status_list

__all__ = [
    "CHINA",
    "DEFAULT_LEEWAY",
    "DEFAULT_MAX_PROOF_AGE",
    "DEFAULT_MAX_SKEW",
    "GENESIS",
    "RECORD_TYP",
    "REFUSAL_CODES",
    "Accept",
    "BatchFailure",
    "BatchResult",
    "CacheItem",
    "Decision",
    "LocalCounters",
    "MaxAges",
    "OfflinePolicy",
    "OfflineRecord",
    "OfflineRedemption",
    "RecordClaims",
    "Refusal",
    "StalenessReport",
    "StationCache",
    "StationInfo",
    "StationKeys",
    "VerifiedRecord",
    "china_day",
    "decide",
    "judge",
    "record_hash",
    "sign_record",
    "station_key_records",
    "verify_batch",
    "verify_record",
]

CHINA = timezone(timedelta(hours=8), "CST")
"""China time, UTC+8 (no daylight saving since 1991): a "day" is a China date."""
RECORD_TYP = "ul-offline+jwt"
"""Layout version 1 of the record. Another layout gets another ``typ``."""
GENESIS = b64url_encode(bytes(32))
"""``prev`` of a device's first record (seq 1): 32 zero bytes, base64url (43 ``A``)."""
DEFAULT_MAX_SKEW = timedelta(minutes=5)
DEFAULT_LEEWAY = timedelta(seconds=30)
DEFAULT_MAX_PROOF_AGE = timedelta(seconds=90)
REPLAY_KEEP = timedelta(days=2)
"""How long after its proof time a redeemed presentation stays in the replay cache: it cannot
verify more than 2 minutes from its proof time, so two days also cover a clock set back."""
MAX_RECORD_CHARS = 4096
MAX_SEQ = 2**53 - 1
MAX_FEN = 10**12
MAX_QUANTITY = 1000
MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_HEADER_MEMBERS = frozenset({"alg", "kid", "typ"})
_CLAIM_MEMBERS = frozenset(
    {
        "clk",
        "home",
        "iat",
        "member",
        "prev",
        "presentation",
        "program",
        "quantity",
        "seq",
        "station",
        "value",
        "version",
    }
)

# The reasons of a refusal (docs/station.md, section 4), in the order they are judged.
OFFLINE_NOT_ALLOWED = "offline-not-allowed"
STALE_CACHE = "stale-cache"
PRESENTATION_REFUSED = "presentation-refused"
STATION_CLOCK_BEHIND = "station-clock-behind"
REPLAYED = "replayed"
PROGRAM_NOT_OPEN = "program-not-open"
NOT_REDEEMABLE_HERE = "not-redeemable-here"
INVALID_QUANTITY = "invalid-quantity"
OFFLINE_CANNOT_JUDGE = "offline-cannot-judge"
NOT_ELIGIBLE = "not-eligible"
OFFLINE_MEMBER_LIMIT = "offline-member-limit"
OFFLINE_STATION_CEILING = "offline-station-ceiling"
REFUSAL_CODES = (
    OFFLINE_NOT_ALLOWED,
    STALE_CACHE,
    PRESENTATION_REFUSED,
    STATION_CLOCK_BEHIND,
    REPLAYED,
    PROGRAM_NOT_OPEN,
    NOT_REDEEMABLE_HERE,
    INVALID_QUANTITY,
    OFFLINE_CANNOT_JUDGE,
    NOT_ELIGIBLE,
    OFFLINE_MEMBER_LIMIT,
    OFFLINE_STATION_CEILING,
)


# -- times -------------------------------------------------------------------------------------


def _seconds(value: datetime, what: str) -> int:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{what} must be an aware datetime")
    return int(value.timestamp() // 1)


def _whole_seconds(value: timedelta) -> int:
    return int(value.total_seconds() // 1)


def china_day(at: int | datetime) -> str:
    """The China date (UTC+8) of ``at`` (NumericDate seconds or an aware time), ``YYYY-MM-DD``."""
    seconds = at if isinstance(at, int) else _seconds(at, "at")
    return datetime.fromtimestamp(seconds, CHINA).date().isoformat()


def _next_china_midnight(seconds: int) -> datetime:
    day = datetime.fromtimestamp(seconds, CHINA).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=CHINA).astimezone(UTC)


def _china(at: datetime) -> str:
    return at.astimezone(CHINA).strftime("%Y-%m-%d %H:%M China time")


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(span: timedelta) -> str:
    """A span in words: ``2 days``, ``5 hours``, ``1 hour 30 minutes``, ``45 seconds``."""
    seconds = max(int(span.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [
        f"{n} {unit}{'s' if n != 1 else ''}"
        for n, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"), (seconds, "second"))
        if n
    ]
    return " ".join(parts[:2]) or "0 seconds"


# -- the record --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordClaims:
    """The claims of an offline record (docs/station.md, section 2). Times are NumericDate
    seconds: ``iat`` the station's judged time of the redemption (its clock, corrected by the
    offset learned at its last sync), ``clk`` its raw device clock at that moment."""

    station: str
    seq: int
    prev: str
    program: str
    version: int
    quantity: int
    value: int
    presentation: str
    member: str
    home: str
    iat: int
    clk: int

    def to_json(self) -> dict[str, Any]:
        return {
            "clk": self.clk,
            "home": self.home,
            "iat": self.iat,
            "member": self.member,
            "prev": self.prev,
            "presentation": self.presentation,
            "program": self.program,
            "quantity": self.quantity,
            "seq": self.seq,
            "station": self.station,
            "value": self.value,
            "version": self.version,
        }

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.iat, UTC)

    @property
    def day(self) -> str:
        """The China date the redemption counts against (the limits' day)."""
        return china_day(self.iat)


@dataclass(frozen=True, slots=True)
class OfflineRecord:
    """A signed record: the token (what is stored and synced), the device key's id, the
    record's hash (what the next record's ``prev`` holds) and its claims."""

    token: str
    kid: str
    hash: str
    claims: RecordClaims

    @property
    def seq(self) -> int:
        return self.claims.seq

    @property
    def prev(self) -> str:
        return self.claims.prev


@dataclass(frozen=True, slots=True)
class VerifiedRecord(OfflineRecord):
    """A record that passed :func:`verify_record` (only it should build one)."""


def record_hash(token: str) -> str:
    """base64url(SHA-256(the token's ASCII bytes)): what the next record's ``prev`` holds."""
    return b64url_encode(hashlib.sha256(token.encode("ascii")).digest())


def _int(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


# Canonical unpadded base64url of exactly 16 and 32 bytes: the last character carries 2 (or 4)
# bits and zero padding bits, so only some characters may end it. A pattern instead of a
# decode: a third faster record verification (these three claims and the kid, every record).
_B64_SIZED = {
    16: re.compile(r"[A-Za-z0-9_-]{21}[AQgw]\Z"),
    32: re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]\Z"),
}


def _b64_bytes(value: object, size: int) -> bool:
    """``value`` is the canonical base64url of ``size`` (16 or 32) bytes."""
    return isinstance(value, str) and _B64_SIZED[size].match(value) is not None


def _claims_from_json(claims: object) -> RecordClaims:
    """Type- and range-check decoded claims. Raises RecordMalformed only."""
    if not isinstance(claims, dict) or set(claims) != _CLAIM_MEMBERS:
        raise RecordMalformed("record claims are not exactly the twelve members of the format")
    problems = [
        name
        for name, ok in (
            ("station", isinstance(claims["station"], str) and _ID.match(claims["station"])),
            ("program", isinstance(claims["program"], str) and _ID.match(claims["program"])),
            ("home", isinstance(claims["home"], str) and _ID.match(claims["home"])),
            ("member", _b64_bytes(claims["member"], 16)),
            ("presentation", _b64_bytes(claims["presentation"], 32)),
            ("prev", _b64_bytes(claims["prev"], 32)),
            ("seq", _int(claims["seq"], 1, MAX_SEQ)),
            ("version", _int(claims["version"], 1, MAX_SEQ)),
            ("quantity", _int(claims["quantity"], 1, MAX_QUANTITY)),
            ("value", _int(claims["value"], 0, MAX_FEN * MAX_QUANTITY)),
            ("iat", _int(claims["iat"], 0, MAX_TIME)),
            ("clk", _int(claims["clk"], 0, MAX_TIME)),
        )
        if not ok
    ]
    if problems:
        raise RecordMalformed(f"record claim {problems[0]} is missing or of the wrong type/range")
    return RecordClaims(
        station=claims["station"],
        seq=claims["seq"],
        prev=claims["prev"],
        program=claims["program"],
        version=claims["version"],
        quantity=claims["quantity"],
        value=claims["value"],
        presentation=claims["presentation"],
        member=claims["member"],
        home=claims["home"],
        iat=claims["iat"],
        clk=claims["clk"],
    )


def sign_record(claims: RecordClaims, key: keys.PrivateKey) -> OfflineRecord:
    """The record of ``claims`` signed by the device key ``key`` (deterministic: the same
    claims and key always give the same token).

    Raises:
        ValueError: a claim of the wrong type or range (the checks :func:`verify_record` makes).
    """
    try:
        _claims_from_json(claims.to_json())
    except RecordMalformed as e:
        raise ValueError(str(e)) from None
    header = {"alg": "EdDSA", "kid": key.key_id, "typ": RECORD_TYP}
    signing_input = (
        b64url_encode(canonical_bytes(header))
        + "."
        + b64url_encode(canonical_bytes(claims.to_json()))
    )
    token = signing_input + "." + b64url_encode(key.sign(signing_input.encode("ascii")))
    return OfflineRecord(token, key.key_id, record_hash(token), claims)


def _json_part(part: str, what: str) -> object:
    try:
        return parse_canonical(b64url_decode(part))
    except (ValueError, CanonicalError) as e:  # CanonicalError is a ValueError too
        raise RecordMalformed(f"record {what} is not base64url of canonical JSON") from e


# The encoded header of a device's records never changes: its kid, once checked, is kept.
_HEADER_KIDS: dict[str, str] = {}


def _header_kid(part: str) -> str:
    header = _json_part(part, "header")
    if (
        not isinstance(header, dict)
        or set(header) != _HEADER_MEMBERS
        or header["alg"] != "EdDSA"
        or header["typ"] != RECORD_TYP
        or not _b64_bytes(header["kid"], 32)
    ):
        raise RecordMalformed(
            f'not an offline record: the header must be exactly alg "EdDSA", a kid and typ'
            f' "{RECORD_TYP}"'
        )
    return str(header["kid"])


def _decode(token: object) -> tuple[str, RecordClaims, str, bytes]:
    """kid, claims, signing input and signature of ``token``. Raises RecordMalformed only."""
    if not isinstance(token, str) or not token.isascii() or len(token) > MAX_RECORD_CHARS:
        raise RecordMalformed("a record is a compact JWS: an ASCII string of at most 4096")
    parts = token.split(".")
    if len(parts) != 3:
        raise RecordMalformed("a record has three dot-separated parts")
    kid = _HEADER_KIDS.get(parts[0])
    if kid is None:
        kid = _header_kid(parts[0])
        if len(_HEADER_KIDS) >= 64:
            _HEADER_KIDS.clear()
        _HEADER_KIDS[parts[0]] = kid
    claims = _claims_from_json(_json_part(parts[1], "claims"))
    try:
        signature = b64url_decode(parts[2])
    except ValueError as e:
        raise RecordMalformed("record signature is not base64url") from e
    if len(signature) != 64:
        raise RecordMalformed("record signature is not 64 bytes")
    return kid, claims, f"{parts[0]}.{parts[1]}", signature


StationKeys = Mapping[str, keys.KeyRecord] | Mapping[keys.KeyId, keys.KeyRecord]
"""The device keys a record may be signed by: kid -> key record (role station, scope the
station id, validity and revocation times)."""


def station_key_records(
    source: keys.TrustList | keys.Keyring | Iterable[keys.KeyRecord], station: str
) -> dict[str, keys.KeyRecord]:
    """kid -> record of the *station* keys of ``station`` in ``source``: what
    :func:`verify_record` takes. (The server builds the same records from its registry:
    ``not_before`` = registered_at, ``revoked_at`` = revoked_at, scope = the station id.)"""
    records = source.keyring if isinstance(source, keys.TrustList) else source
    return {r.kid: r for r in records if r.role is keys.Role.STATION and r.scope == station}


@dataclass(frozen=True, slots=True)
class SignatureChecked:
    """A record whose form (check 1 of :func:`verify_record`) and signature (check 3) were
    checked ahead, outside any lock: its kid, its claims and its hash. The signature verified
    under the public key whose RFC 7638 thumbprint is ``kid``, so any key record with that kid
    holds the same key: :func:`verify_record` then skips the decoding and the Ed25519
    verification and still makes every other check with the key records it is given."""

    kid: str
    claims: RecordClaims
    hash: str


Presigned = Mapping[str, SignatureChecked]
"""token -> :class:`SignatureChecked`, as :func:`check_signatures` builds it."""


def check_signatures(
    tokens: Iterable[object], station_keys: StationKeys
) -> dict[str, SignatureChecked]:
    """The tokens among ``tokens`` that decode (check 1) and whose signature is verified under
    the key their header names, if ``station_keys`` has it (check 3): the expensive half of
    :func:`verify_record`, done ahead (the server does it before it takes the single writer's
    lock, on the reader's copy of the device keys). A token missing from the answer is simply
    verified in full later; nothing here decides a record.

    One signature per chained run. The tokens are taken in order, in runs where each names
    the same key as the one before it and its ``prev`` is that token's hash (SHA-256 of the
    whole token, signature included). The last token of a run is verified; if it holds, every
    token of the run is authenticated by it, because its signed ``prev`` fixes its predecessor
    byte for byte, which fixes its own predecessor, and so on (a different token with the same
    hash would be a SHA-256 second preimage). If it fails, each token of the run is verified on
    its own. A device signs every record, so for a device's records the answer is the same as
    verifying each; a run costs one Ed25519 verification instead of one per record."""
    decoded: list[tuple[str, str, RecordClaims, str, bytes, str]] = []
    seen: set[str] = set()
    for token in tokens:
        if not isinstance(token, str) or token in seen:
            continue
        try:
            kid, claims, signing_input, signature = _decode(token)
        except RecordMalformed:
            continue
        seen.add(token)
        decoded.append((token, kid, claims, signing_input, signature, record_hash(token)))
    out: dict[str, SignatureChecked] = {}
    start = 0
    for i in range(1, len(decoded) + 1):
        if i < len(decoded):
            previous, current = decoded[i - 1], decoded[i]
            if current[1] == previous[1] and current[2].prev == previous[5]:
                continue  # the run goes on
        _check_run(decoded[start:i], station_keys, out)
        start = i
    return out


def _check_run(
    run: list[tuple[str, str, RecordClaims, str, bytes, str]],
    station_keys: StationKeys,
    out: dict[str, SignatureChecked],
) -> None:
    """Verify the last token of a chained run (see :func:`check_signatures`); if it fails,
    each token on its own. Adds what verified to ``out``."""
    kid = run[-1][1]
    record = station_keys.get(keys.KeyId(kid))
    if record is None or record.kid != kid:
        return
    verify = record.public_key.verify
    token, _, _, signing_input, signature, _ = run[-1]
    try:
        verify(signature, signing_input.encode("ascii"))
        chosen = run
    except keys.InvalidSignature:
        chosen = []
        for item in run[:-1]:
            try:
                verify(item[4], item[3].encode("ascii"))
            except keys.InvalidSignature:
                continue
            chosen.append(item)
    for token, kid, claims, _, _, hash_ in chosen:
        out[token] = SignatureChecked(kid, claims, hash_)


def verify_record(
    token: str,
    station_public_keys_by_kid: StationKeys,
    *,
    expected_station: str,
    now: datetime,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
    presigned: Presigned | None = None,
) -> VerifiedRecord:
    """Verify one offline record of ``expected_station`` at ``now``. The checks, in order:

    1. the compact JWS, canonical JSON header and claims, each member's type and range
                                                                      -- RecordMalformed
    2. ``kid`` names a station key of ``expected_station``             -- RecordUnknownKey
    3. the signature, over ``header.claims`` as sent                   -- RecordSignatureInvalid
    4. the claims name ``expected_station``                            -- RecordWrongStation
    5. the key could sign at ``iat`` (registered, not revoked, not expired) -- RecordKeyRevoked
    6. ``iat <= now + max_skew`` (not from the future)                 -- RecordClockSkew

    Raises:
        StationRecordError: one of the subclasses above, and nothing else for any string.

    ``presigned`` (:func:`check_signatures`): records whose checks 1 and 3 were made ahead;
    for them only checks 2, 4, 5 and 6 run here, with ``station_public_keys_by_kid``.
    """
    checked = None if presigned is None or not isinstance(token, str) else presigned.get(token)
    if checked is None:
        kid, claims, signing_input, signature = _decode(token)
    else:
        kid, claims = checked.kid, checked.claims
    record = station_public_keys_by_kid.get(keys.KeyId(kid))
    if (
        record is None
        or record.kid != kid
        or record.role is not keys.Role.STATION
        or record.scope != expected_station
    ):
        raise RecordUnknownKey(f"key {kid} is not a device key of station {expected_station}")
    if checked is None:
        try:
            record.public_key.verify(signature, signing_input.encode("ascii"))
        except keys.InvalidSignature as e:
            raise RecordSignatureInvalid("the device key's signature does not verify") from e
    if claims.station != expected_station:
        raise RecordWrongStation(
            f"the record is station {claims.station}'s, not {expected_station}'s"
        )
    try:
        record.check_valid_at(claims.time)
    except keys.KeysError as e:
        raise RecordKeyRevoked(f"the device key could not sign at {_iso(claims.iat)}: {e}") from e
    now_s = _seconds(now, "now")
    if claims.iat > now_s + _whole_seconds(max_skew):
        raise RecordClockSkew(
            f"record {claims.seq} is dated {_iso(claims.iat)}, {claims.iat - now_s} s in the"
            f" future (leeway {_whole_seconds(max_skew)} s): check the station's clock"
        )
    return VerifiedRecord(
        token, kid, record_hash(token) if checked is None else checked.hash, claims
    )


@dataclass(frozen=True, slots=True)
class BatchFailure:
    """The first record of a batch that failed: its position in the batch, its ``seq`` (when
    it could be read at all) and the error, whose ``code`` says why."""

    index: int
    seq: int | None
    error: StationRecordError

    @property
    def code(self) -> str:
        return self.error.code

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "unreadable seq"
        return f"record {self.index} ({where}): {self.error.code}: {self.error}"


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The records accepted, in order (a prefix of the batch), and the first failure, if any:
    the records after it are not judged (the chain is broken there)."""

    accepted: tuple[VerifiedRecord, ...]
    failure: BatchFailure | None

    @property
    def ok(self) -> bool:
        return self.failure is None


def _peek_seq(token: str) -> int | None:
    """A record's ``seq`` read WITHOUT verifying anything (to tell a reorder from a gap)."""
    try:
        return _decode(token)[1].seq
    except RecordMalformed:
        return None


def verify_batch(
    records: Sequence[str],
    previous_seq: int,
    previous_hash: str,
    *,
    station_keys: StationKeys,
    expected_station: str,
    now: datetime,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
    previous_time: int | None = None,
    kid: str | None = None,
    known_presentations: Container[str] = frozenset(),
    presigned: Presigned | None = None,
) -> BatchResult:
    """Verify a batch of one device's records that continue its chain after ``previous_seq``
    and ``previous_hash`` (0 and :data:`GENESIS` for a device's first batch).

    Each record passes :func:`verify_record`, then, against its predecessor:

    - the same device key as the chain (``kid``; default: the first record's) -- RecordChainBroken
    - ``seq`` is the predecessor's plus one: a smaller one is RecordDuplicate (a resend, or
      a forked chain when the bytes differ); a larger one is RecordReordered if the missing
      seq comes later in the batch, otherwise RecordGap
    - ``prev`` is the predecessor's hash                               -- RecordChainBroken
    - ``iat`` is not earlier than the predecessor's (``previous_time`` for the first) by more
      than ``max_skew``                                                -- RecordClockSkew
    - no two records carry the same presentation, nor one of ``known_presentations``
      (those the server has recorded already)                          -- RecordReplayed

    ``presigned``: as for :func:`verify_record` (signatures checked ahead).

    Never raises for bad records: the result names the first failing record and why.
    """
    accepted: list[VerifiedRecord] = []
    seq, head, last_time, chain_kid = previous_seq, previous_hash, previous_time, kid
    seen: set[str] = set()
    for index, token in enumerate(records):
        try:
            record = verify_record(
                token,
                station_keys,
                expected_station=expected_station,
                now=now,
                max_skew=max_skew,
                presigned=presigned,
            )
            _check_link(
                record,
                seq=seq,
                head=head,
                last_time=last_time,
                chain_kid=chain_kid,
                max_skew=max_skew,
                later=itertools.islice(records, index + 1, None),
            )
            if record.claims.presentation in seen or record.claims.presentation in (
                known_presentations
            ):
                raise RecordReplayed(
                    f"record {record.seq} redeems presentation {record.claims.presentation}"
                    " a second time"
                )
        except StationRecordError as e:
            peek = _peek_seq(token) if isinstance(token, str) else None
            return BatchResult(tuple(accepted), BatchFailure(index, peek, e))
        accepted.append(record)
        seen.add(record.claims.presentation)
        seq, head, last_time, chain_kid = record.seq, record.hash, record.claims.iat, record.kid
    return BatchResult(tuple(accepted), None)


def _check_link(
    record: VerifiedRecord,
    *,
    seq: int,
    head: str,
    last_time: int | None,
    chain_kid: str | None,
    max_skew: timedelta,
    later: Iterable[object],
) -> None:
    if chain_kid is not None and record.kid != chain_kid:
        raise RecordChainBroken(
            f"record {record.seq} is signed by device key {record.kid}, not by {chain_kid}:"
            " each device key has its own chain"
        )
    expected = seq + 1
    if record.seq < expected:
        same = record.seq == seq and record.hash == head
        raise RecordDuplicate(
            f"seq {record.seq} was sent already"
            if same
            else f"seq {record.seq} is already taken by another record (a forked chain:"
            " a cloned device or a reset queue)"
        )
    if record.seq > expected:
        if any(_peek_seq(t) == expected for t in later if isinstance(t, str)):
            raise RecordReordered(
                f"seq {record.seq} comes before seq {expected}: the records are out of order"
            )
        missing = (
            f"seq {expected}" if record.seq == expected + 1 else f"seqs {expected}-{record.seq - 1}"
        )
        raise RecordGap(f"{missing} missing before seq {record.seq}")
    if record.prev != head:
        raise RecordChainBroken(
            f"record {record.seq}'s prev is not the hash of record {seq}: a record was altered,"
            " replaced or deleted"
        )
    if last_time is not None and record.claims.iat < last_time - _whole_seconds(max_skew):
        raise RecordClockSkew(
            f"record {record.seq} is dated {_iso(record.claims.iat)}, "
            f"{last_time - record.claims.iat} s before its predecessor (leeway"
            f" {_whole_seconds(max_skew)} s)"
        )


# -- programs and their offline policy -----------------------------------------------------------


def _bad(what: str) -> StationCacheError:
    return StationCacheError(f"program rules: {what}")


def _rules_int(value: object, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _bad(f"{what} must be an integer from {low} to {high}")
    return value


def _rules_obj(value: object, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _bad(f"{what} must be an object")
    return value


def _rules_ids(value: object, what: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) and _ID.match(v) for v in value):
        raise _bad(f"{what} must be a list of ids")
    return frozenset(value)


def _rules_day(value: object, what: str) -> date:
    if not isinstance(value, str) or not _DAY.match(value):
        raise _bad(f"{what} must be a date YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _bad(f"{what} is not a real date") from None


@dataclass(frozen=True, slots=True)
class OfflinePolicy:
    """What a station needs of one program version's rules to decide offline: the ``offline``
    object (``allowed``, ``per_member_per_day``, ``station_daily_value``), the unit value and
    quantity, the quota, the period (China dates, both included), ``where`` and the
    eligibility. Parsed from the stored rules JSON (docs/programs.md, section 2) the server
    provisions; the server validated them, this re-checks the members it uses."""

    program: str
    version: int
    name: str
    allowed: bool
    per_member_per_day: int
    station_daily_value: int
    unit_value: int
    max_quantity: int
    quota_count: int
    quota_per: str
    start: date
    until: date
    stations: frozenset[str]
    station_kinds: frozenset[str]
    groups_any: frozenset[str]
    min_tenure_days: int | None
    home_subtree: str | None

    @classmethod
    def from_rules(cls, program: str, version: int, rules: Mapping[str, Any]) -> OfflinePolicy:
        """Parse one version's rules document.

        Raises:
            StationCacheError: a member this station uses is missing or malformed.
        """
        if not isinstance(program, str) or not _ID.match(program):
            raise _bad("the program id is not an id")
        version = _rules_int(version, "version", 1, MAX_SEQ)
        if not isinstance(rules, Mapping):
            raise _bad("rules must be an object")
        offline = _rules_obj(rules.get("offline") or None, "offline")
        where = _rules_obj(rules.get("where") or None, "where")
        eligibility = _rules_obj(rules.get("eligibility") or None, "eligibility")
        period = _rules_obj(rules.get("period"), "period")
        quota = _rules_obj(rules.get("quota"), "quota")
        allowed = offline.get("allowed", False)
        if not isinstance(allowed, bool):
            raise _bad("offline.allowed must be true or false")
        tenure = eligibility.get("min_tenure_days")
        home = eligibility.get("home_subtree")
        if home is not None and (not isinstance(home, str) or not _ID.match(home)):
            raise _bad("eligibility.home_subtree must be a union code")
        per = quota.get("per")
        if per not in ("program", "month", "week", "day"):
            raise _bad("quota.per must be program, month, week or day")
        name = rules.get("name")
        if not isinstance(name, str):
            raise _bad("name must be a string")
        policy = cls(
            program=program,
            version=version,
            name=name,
            allowed=allowed,
            per_member_per_day=_rules_int(
                offline.get("per_member_per_day", 0), "offline.per_member_per_day", 0, MAX_QUANTITY
            ),
            station_daily_value=_rules_int(
                offline.get("station_daily_value", 0), "offline.station_daily_value", 0, MAX_FEN
            ),
            unit_value=_rules_int(rules.get("unit_value"), "unit_value", 0, MAX_FEN),
            max_quantity=_rules_int(rules.get("max_quantity", 1), "max_quantity", 1, MAX_QUANTITY),
            quota_count=_rules_int(quota.get("count"), "quota.count", 1, MAX_QUANTITY),
            quota_per=str(per),
            start=_rules_day(period.get("from"), "period.from"),
            until=_rules_day(period.get("until"), "period.until"),
            stations=_rules_ids(where.get("stations"), "where.stations"),
            station_kinds=_rules_ids(where.get("station_kinds"), "where.station_kinds"),
            groups_any=_rules_ids(eligibility.get("groups_any"), "eligibility.groups_any"),
            min_tenure_days=None
            if tenure is None
            else _rules_int(tenure, "eligibility.min_tenure_days", 0, 36500),
            home_subtree=home,
        )
        if policy.allowed and policy.per_member_per_day == 0:
            raise _bad("offline redemption needs offline.per_member_per_day of at least 1")
        return policy

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> OfflinePolicy:
        """One provisioned program: ``{"program": id, "version": n, "rules": {...}}``."""
        if not isinstance(item, Mapping):
            raise _bad("a provisioned program must be an object")
        program, version, rules = item.get("program"), item.get("version"), item.get("rules")
        if not isinstance(program, str) or type(version) is not int:
            raise _bad("a provisioned program needs a program id and an integer version")
        if not isinstance(rules, Mapping):
            raise _bad("rules must be an object")
        return cls.from_rules(program, version, rules)

    @property
    def member_daily_limit(self) -> int:
        """Units one member may get offline per China day at one station:
        ``min(per_member_per_day, quota.count)`` (every quota period holds whole days, so no
        day may exceed the quota either)."""
        return min(self.per_member_per_day, self.quota_count)

    @property
    def daily_worst_case(self) -> int:
        """The most value (fen) one station device may hand out offline for this program in
        one China day: the largest multiple of ``unit_value`` within ``station_daily_value``
        (0 when offline is not allowed or the unit value is 0)."""
        if not self.allowed or self.unit_value == 0:
            return 0
        return self.station_daily_value // self.unit_value * self.unit_value


@dataclass(frozen=True, slots=True)
class StationInfo:
    """The station this device serves: its id and kind (docs/stations.md) and, optionally, a
    ceiling (fen) on the value it may redeem offline per China day across all programs."""

    station_id: str
    kind: str
    daily_ceiling: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.station_id, str) or not _ID.match(self.station_id):
            raise ValueError("station_id must be a station id")
        if self.daily_ceiling is not None and not _int(self.daily_ceiling, 0, MAX_FEN):
            raise ValueError("daily_ceiling must be an integer from 0 to 10**12, or None")


# -- decisions ---------------------------------------------------------------------------------


class LocalCounters(NamedTuple):
    """What the station's queue knows for one scan: units this member got offline today for
    this program at this device, value redeemed offline today for this program and for all
    programs at this device, whether the presentation was redeemed here before, and the time
    of the device's last record (``None``: no record yet)."""

    member_units: int = 0
    program_value: int = 0
    station_value: int = 0
    replayed: bool = False
    last_time: int | None = None


@dataclass(frozen=True, slots=True)
class OfflineRedemption:
    """An accepted offline redemption, not yet signed: the queue gives it its ``seq`` and
    ``prev`` (:meth:`claims`) and signs it. ``replay_until`` (local only) is when its
    presentation may leave the replay cache."""

    station: str
    program: str
    version: int
    quantity: int
    value: int
    presentation: str
    member: str
    home: str
    iat: int
    clk: int
    replay_until: int

    @property
    def day(self) -> str:
        return china_day(self.iat)

    def claims(self, seq: int, prev: str) -> RecordClaims:
        return RecordClaims(
            station=self.station,
            seq=seq,
            prev=prev,
            program=self.program,
            version=self.version,
            quantity=self.quantity,
            value=self.value,
            presentation=self.presentation,
            member=self.member,
            home=self.home,
            iat=self.iat,
            clk=self.clk,
        )


@dataclass(frozen=True, slots=True)
class OfflineRemaining:
    """What is left at this device for one member and program on the China day of a decision,
    under the offline limits (docs/station.md, sections 4 and 5): ``units`` the member may
    still get (of ``limit`` = :attr:`OfflinePolicy.member_daily_limit`), ``program_value``
    the fen left of the program's ``station_daily_value``, ``station_value`` the fen left of
    the station's ``daily_ceiling`` (None: it has none), and when all of them renew (the next
    China midnight, ``YYYY-MM-DDTHH:MM:SSZ``). After an :class:`Accept`, they count the
    accepted redemption. Only the offline limits: the server judges the quota over longer
    periods and other stations at sync."""

    units: int
    limit: int
    program_value: int
    station_value: int | None
    renews_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "limit": self.limit,
            "program_value": self.program_value,
            "station_value": self.station_value,
            "renews_at": self.renews_at,
        }


def offline_remaining(
    policy: OfflinePolicy, counters: LocalCounters, *, station: StationInfo, now: datetime
) -> OfflineRemaining:
    """What :class:`OfflineRemaining` says is left, from the queue's ``counters`` for the
    member, the program and the China day of ``now`` (never below 0). Pure."""
    now_s = _seconds(now, "now")
    limit = policy.member_daily_limit if policy.allowed else 0
    ceiling = station.daily_ceiling
    return OfflineRemaining(
        units=max(limit - counters.member_units, 0),
        limit=limit,
        program_value=max(policy.station_daily_value - counters.program_value, 0),
        station_value=None if ceiling is None else max(ceiling - counters.station_value, 0),
        renews_at=_next_china_midnight(now_s).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


@dataclass(frozen=True, slots=True)
class Accept:
    """Redeem: sign and queue ``redemption``. ``remaining``: what is left for the member and
    the program today at this device once it is redeemed (:class:`OfflineRemaining`)."""

    redemption: OfflineRedemption
    remaining: OfflineRemaining | None = None

    @property
    def accepted(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Refusal:
    """Do not redeem. ``code`` is one of :data:`REFUSAL_CODES`; ``message`` says why in plain
    words (for the staff's screen); ``extra`` holds the numbers (``used``, ``limit``, ``left``,
    ``renews_at``, the presentation's ``reason`` and ``step``, ...)."""

    code: str
    message: str
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return False


Decision = Accept | Refusal


def decide(  # noqa: PLR0911  (one return per refusal reason, in order)
    presentation: VerifiedPresentation,
    policy: OfflinePolicy,
    counters: LocalCounters,
    *,
    station: StationInfo,
    quantity: int,
    now: datetime,
    clock: datetime | None = None,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> Decision:
    """The offline decision for a verified presentation, a program and a quantity at ``now``
    (the station's judged time; ``clock`` its raw device clock, default ``now``). The checks,
    in order, the first failure deciding (docs/station.md, section 4):

    1. ``now`` is not before the device's last record by more than ``max_skew``
                                                                    -- station-clock-behind
    2. the presentation was not redeemed at this device before         -- replayed
    3. the program allows offline redemption                           -- offline-not-allowed
    4. the China date of ``now`` lies in the program's period          -- program-not-open
    5. ``where.stations`` and ``where.station_kinds`` admit this station -- not-redeemable-here
    6. 1 <= quantity <= max_quantity                                   -- invalid-quantity
    7. no eligibility rule the station cannot see (tenure, home subtree) -- offline-cannot-judge
    8. ``groups_any``: a disclosed group is one of them                -- not-eligible
    9. member units today + quantity <= :attr:`OfflinePolicy.member_daily_limit`
                                                                    -- offline-member-limit
    10. program value today + value <= ``station_daily_value``, then station value today +
        value <= the station's ``daily_ceiling`` (if any)           -- offline-station-ceiling

    Pure: ``counters`` come from the station's queue (for the China date of ``now``).
    """
    now_s = _seconds(now, "now")
    clk = now_s if clock is None else _seconds(clock, "clock")
    skew = _whole_seconds(max_skew)
    if counters.last_time is not None and now_s < counters.last_time - skew:
        return Refusal(
            STATION_CLOCK_BEHIND,
            f"this station's clock ({_iso(now_s)}) is behind its last record"
            f" ({_iso(counters.last_time)}): set the clock right, or connect",
            {"last_record": _iso(counters.last_time)},
        )
    if counters.replayed:
        return Refusal(REPLAYED, "this QR code was redeemed already: ask for a fresh one")
    if not policy.allowed:
        return Refusal(OFFLINE_NOT_ALLOWED, f"{policy.name}: not redeemable offline")
    today = datetime.fromtimestamp(now_s, CHINA).date()
    if not policy.start <= today <= policy.until:
        return Refusal(
            PROGRAM_NOT_OPEN,
            f"{policy.name} runs from {policy.start} to {policy.until}, not on {today}",
            {"opens": policy.start.isoformat(), "closes": policy.until.isoformat()},
        )
    if (policy.stations and station.station_id not in policy.stations) or (
        policy.station_kinds and station.kind not in policy.station_kinds
    ):
        return Refusal(NOT_REDEEMABLE_HERE, f"{policy.name} is not redeemable at this station")
    if type(quantity) is not int or not 1 <= quantity <= policy.max_quantity:
        return Refusal(
            INVALID_QUANTITY,
            f"the quantity must be from 1 to {policy.max_quantity}",
            {"max_quantity": policy.max_quantity},
        )
    if policy.min_tenure_days or policy.home_subtree is not None:
        return Refusal(
            OFFLINE_CANNOT_JUDGE,
            f"{policy.name}'s eligibility (membership tenure or home union) cannot be judged"
            " offline: connect to redeem it",
        )
    if policy.groups_any and not presentation.groups & policy.groups_any:
        return Refusal(
            NOT_ELIGIBLE,
            f"{policy.name} is for members of a group this QR code does not show",
            {"groups_any": sorted(policy.groups_any)},
        )
    limit = policy.member_daily_limit
    renews_at = _next_china_midnight(now_s).strftime("%Y-%m-%dT%H:%M:%SZ")
    if counters.member_units + quantity > limit:
        return Refusal(
            OFFLINE_MEMBER_LIMIT,
            f"offline, this member may get {limit} of {policy.name} a day here:"
            f" {counters.member_units} used today",
            {"used": counters.member_units, "limit": limit, "renews_at": renews_at},
        )
    value = policy.unit_value * quantity
    if counters.program_value + value > policy.station_daily_value:
        return Refusal(
            OFFLINE_STATION_CEILING,
            f"this station's offline limit for {policy.name} today is reached: connect to"
            " redeem more",
            {
                "scope": "program",
                "left": policy.station_daily_value - counters.program_value,
                "renews_at": renews_at,
            },
        )
    ceiling = station.daily_ceiling
    if ceiling is not None and counters.station_value + value > ceiling:
        return Refusal(
            OFFLINE_STATION_CEILING,
            "this station's offline limit for today is reached: connect to redeem more",
            {"scope": "station", "left": ceiling - counters.station_value, "renews_at": renews_at},
        )
    after = LocalCounters(
        counters.member_units + quantity,
        counters.program_value + value,
        counters.station_value + value,
    )
    return Accept(
        OfflineRedemption(
            station=station.station_id,
            program=policy.program,
            version=policy.version,
            quantity=quantity,
            value=value,
            presentation=b64url_encode(presentation.presentation_hash),
            member=presentation.member_id,
            home=presentation.home_union,
            iat=now_s,
            clk=clk,
            replay_until=max(now_s, presentation.proof_time) + _whole_seconds(REPLAY_KEEP),
        ),
        offline_remaining(policy, after, station=station, now=now),
    )


# -- the provisioned cache ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MaxAges:
    """How old each cached item may grow before the station refuses to rely on it. The trust
    list and the programs age from when they were fetched (a fetch is the server confirming
    them); a status list also ages from its signed ``iat`` and its ``ttl``, the stricter
    deciding."""

    trust_list: timedelta = timedelta(days=2)
    status_list: timedelta = timedelta(days=1)
    programs: timedelta = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class CacheItem:
    """One cached item at one instant: when it was fetched, until when it may be relied on,
    whether it is stale, and that in plain words."""

    name: str
    fetched_at: datetime
    good_until: datetime
    stale: bool
    words: str


@dataclass(frozen=True, slots=True)
class StalenessReport:
    """Every cached item's state at ``now`` (:meth:`StationCache.staleness`)."""

    now: datetime
    items: tuple[CacheItem, ...]

    @property
    def ok(self) -> bool:
        return not any(item.stale for item in self.items)

    @property
    def stale(self) -> tuple[CacheItem, ...]:
        return tuple(item for item in self.items if item.stale)

    def __str__(self) -> str:
        return "\n".join(item.words for item in self.items)


def _item(
    name: str,
    fetched_at: datetime,
    good_until: datetime,
    *,
    now: datetime,
    leeway: timedelta,
    consequence: str,
    extra_reason: str | None = None,
) -> CacheItem:
    if now + leeway < fetched_at:
        words = (
            f"{name}: STALE: fetched at {_china(fetched_at)}, after this station's clock"
            f" ({_china(now)}): check the clock; until then {consequence}"
        )
        return CacheItem(name, fetched_at, good_until, True, words)
    if now >= good_until or extra_reason is not None:
        why = f"since {_china(good_until)}" if now >= good_until else extra_reason
        words = (
            f"{name}: STALE ({why}; fetched {_china(fetched_at)}): connect to refresh it;"
            f" until then {consequence}"
        )
        return CacheItem(name, fetched_at, good_until, True, words)
    words = (
        f"{name}: fresh: fetched {_china(fetched_at)}, good until {_china(good_until)}"
        f" ({_duration(good_until - now)} left)"
    )
    return CacheItem(name, fetched_at, good_until, False, words)


@dataclass(frozen=True, slots=True)
class StationCache:
    """What a station device was provisioned with, and when. Immutable: the ``with_*``
    methods return a refreshed copy. Build one with :meth:`provision`."""

    station: StationInfo
    trust_list: keys.TrustList
    trust_list_fetched_at: datetime
    status_lists: Mapping[str, VerifiedStatusList]
    status_lists_fetched_at: Mapping[str, datetime]
    programs: Mapping[str, OfflinePolicy]
    programs_fetched_at: datetime
    max_ages: MaxAges = MaxAges()
    leeway: timedelta = DEFAULT_LEEWAY
    max_proof_age: timedelta = DEFAULT_MAX_PROOF_AGE
    max_skew: timedelta = DEFAULT_MAX_SKEW

    @classmethod
    def provision(
        cls,
        *,
        station: StationInfo,
        trust_list: str,
        roots: keys.PublicKey | Sequence[keys.PublicKey],
        status_lists: Iterable[str],
        programs: Iterable[Mapping[str, Any]],
        now: datetime,
        max_ages: MaxAges | None = None,
        leeway: timedelta = DEFAULT_LEEWAY,
        max_proof_age: timedelta = DEFAULT_MAX_PROOF_AGE,
        max_skew: timedelta = DEFAULT_MAX_SKEW,
    ) -> StationCache:
        """Verify and cache what the server sent at ``now``: the trust list token (against the
        pinned root keys), each issuer's status list token, and the programs redeemable here
        (``{"program", "version", "rules"}`` each, rules in their stored form).

        Raises:
            keys.TrustListError: the trust list does not verify.
            StatusListError: a status list does not verify.
            StationCacheError: a program's rules are malformed, or a program twice.
        """
        verified = keys.verify_trust_list(trust_list, roots, now)
        cache = cls(
            station=station,
            trust_list=verified,
            trust_list_fetched_at=now,
            status_lists=MappingProxyType({}),
            status_lists_fetched_at=MappingProxyType({}),
            programs=MappingProxyType({}),
            programs_fetched_at=now,
            max_ages=max_ages or MaxAges(),
            leeway=leeway,
            max_proof_age=max_proof_age,
            max_skew=max_skew,
        )
        for token in status_lists:
            cache = cache.with_status_list(token, now)
        return cache.with_programs(programs, now)

    def with_trust_list(
        self, token: str, roots: keys.PublicKey | Sequence[keys.PublicKey], now: datetime
    ) -> StationCache:
        """A copy with a freshly fetched trust list. Raises keys.TrustListError."""
        verified = keys.verify_trust_list(token, roots, now)
        return replace(self, trust_list=verified, trust_list_fetched_at=now)

    def with_status_list(self, token: str, now: datetime) -> StationCache:
        """A copy with a freshly fetched status list (its issuer is its key's union).
        Raises StatusListError."""
        verified = verify_status_list(token, self.trust_list, now, leeway=self.leeway)
        lists = dict(self.status_lists)
        fetched = dict(self.status_lists_fetched_at)
        lists[verified.issuer] = verified
        fetched[verified.issuer] = now
        return replace(
            self,
            status_lists=MappingProxyType(lists),
            status_lists_fetched_at=MappingProxyType(fetched),
        )

    def with_programs(self, programs: Iterable[Mapping[str, Any]], now: datetime) -> StationCache:
        """A copy whose programs are exactly ``programs`` (a program not listed any more is
        gone). Raises StationCacheError."""
        parsed: dict[str, OfflinePolicy] = {}
        for item in programs:
            policy = OfflinePolicy.from_json(item)
            if policy.program in parsed:
                raise StationCacheError(f"program {policy.program} is provisioned twice")
            parsed[policy.program] = policy
        return replace(self, programs=MappingProxyType(parsed), programs_fetched_at=now)

    # -- staleness ---------------------------------------------------------------------------

    def trust_list_item(self, now: datetime) -> CacheItem:
        good_until = min(
            self.trust_list.expires_at, self.trust_list_fetched_at + self.max_ages.trust_list
        )
        return _item(
            "trust list",
            self.trust_list_fetched_at,
            good_until,
            now=now,
            leeway=self.leeway,
            consequence="no QR code can be checked offline",
        )

    def status_list_item(self, union: str, now: datetime) -> CacheItem | None:
        """The state of union ``union``'s status list, or None if none is cached."""
        status = self.status_lists.get(union)
        if status is None:
            return None
        fetched = self.status_lists_fetched_at[union]
        age = self.max_ages.status_list
        good_until = min(
            status.expires_at, status.issued_at + status.ttl, status.issued_at + age, fetched + age
        )
        return _item(
            f"status list of union {union}",
            fetched,
            good_until,
            now=now,
            leeway=self.leeway,
            consequence=f"credentials issued by union {union} are refused",
            extra_reason=status.stale_reason(now, max_age=age, leeway=self.leeway),
        )

    def programs_item(self, now: datetime) -> CacheItem:
        return _item(
            "programs",
            self.programs_fetched_at,
            self.programs_fetched_at + self.max_ages.programs,
            now=now,
            leeway=self.leeway,
            consequence="no program can be redeemed offline",
        )

    def staleness(self, now: datetime) -> StalenessReport:
        """Every cached item at ``now``, in plain words: the trust list, each status list
        (by union), the programs."""
        items = [self.trust_list_item(now)]
        for union in sorted(self.status_lists):
            item = self.status_list_item(union, now)
            assert item is not None
            items.append(item)
        items.append(self.programs_item(now))
        return StalenessReport(now, tuple(items))

    def fresh_status_lists(self, now: datetime) -> dict[str, VerifiedStatusList]:
        """The status lists that may be relied on at ``now`` (the others are left out, so a
        credential of their union is refused as missing its list)."""
        out = {}
        for union, status in self.status_lists.items():
            item = self.status_list_item(union, now)
            if item is not None and not item.stale:
                out[union] = status
        return out

    def worst_case_daily_value(self) -> int:
        """The most value (fen) this device can hand out offline in one China day: the sum of
        each program's :attr:`OfflinePolicy.daily_worst_case`, capped by the station's
        ``daily_ceiling`` (docs/station.md, section 5)."""
        total = sum(p.daily_worst_case for p in self.programs.values())
        ceiling = self.station.daily_ceiling
        return total if ceiling is None else min(total, ceiling)


CountersFor = Callable[[str, str, str, str], LocalCounters]
"""``counters(member_id, program_id, china_day, presentation_hash_b64)``: the queue's view."""


def judge(
    text: str,
    *,
    program: str,
    quantity: int,
    cache: StationCache,
    counters: CountersFor,
    now: datetime,
    clock: datetime | None = None,
) -> Decision:
    """The whole offline decision for a scanned QR ``text``: the program is provisioned and
    allows offline redemption (offline-not-allowed); the trust list and programs are fresh
    (stale-cache); the presentation verifies with the cached lists, by the server's own
    :func:`verify_presentation` (presentation-refused, with the verifier's ``reason`` code and
    ``step``; a missing or stale status list of the issuer is stale-cache); then
    :func:`decide` with the queue's ``counters``.

    Raises:
        TypeError: ``text`` is not a string. ValueError: a naive time.
    """
    policy = cache.programs.get(program)
    if policy is None:
        return Refusal(
            OFFLINE_NOT_ALLOWED,
            f"program {program} is not provisioned for offline redemption at this station",
        )
    if not policy.allowed:
        return Refusal(OFFLINE_NOT_ALLOWED, f"{policy.name}: not redeemable offline")
    for item in (cache.trust_list_item(now), cache.programs_item(now)):
        if item.stale:
            return Refusal(STALE_CACHE, item.words, {"item": item.name})
    try:
        presentation = verify_presentation(
            text,
            trust_list=cache.trust_list,
            status_lists=cache.fresh_status_lists(now),
            now=now,
            leeway=cache.leeway,
            max_proof_age=cache.max_proof_age,
            status_max_age=cache.max_ages.status_list,
        )
    except StatusListStale as e:  # StatusListMissing too: only fresh lists were passed
        return Refusal(
            STALE_CACHE,
            f"{e}: this station's copy is missing or stale: connect to refresh it",
            {"item": "status list", "reason": e.code},
        )
    except CredentialError as e:
        return Refusal(PRESENTATION_REFUSED, str(e), {"reason": e.code, "step": e.step})
    day = china_day(now)
    local = counters(
        presentation.member_id, program, day, b64url_encode(presentation.presentation_hash)
    )
    return decide(
        presentation,
        policy,
        local,
        station=cache.station,
        quantity=quantity,
        now=now,
        clock=clock,
        max_skew=cache.max_skew,
    )
