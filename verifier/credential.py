"""The station credential and its QR presentation: CWT in COSE_Sign1, holder proof, base45.

The member's phone holds a *credential* (issued by a union, :func:`issue_credential`) and shows
a *presentation* of it as a QR code (:func:`present`); a station checks it, often offline,
with :func:`verify_presentation` against a verified trust list and status lists. Pure: keys,
times and randomness are passed in. The figures below are measured by the tests and
``bench/bench_credential.py``.

Wire layout (version 1)
-----------------------
The QR text is ``UL1:`` followed by the base45 (RFC 9285) of one CBOR item (RFC 8949, every
item in its shortest form, definite lengths, no tags). Byte by byte, for a member of union
``440106-0012`` whose credential union ``440000`` issued (two groups, one disclosed)::

    83+d                      array of 3 + d items (d = number of disclosures, at most 20)
    -- the credential: an untagged COSE_Sign1 (RFC 9052), copied verbatim as issued --
    84                        COSE_Sign1 = [protected, unprotected, payload, signature]
    4D                        protected: bstr of 13 bytes
       A2 01 27               {1 (alg): -8 (EdDSA),
          04 48 <8 bytes>      4 (kid): the issuer key's short id}
    A0                        unprotected: {} (nothing unsigned)
    58 78                     payload: bstr of 120 bytes, a CWT claims map (RFC 8392)
       A8                     map of 8 (7 to 9) claims, labels in this order:
       01 66 "440000"           1  iss   issuing union code (text)
       04 1A <4>                4  exp   expiry, NumericDate
       06 1A <4>                6  iat   issue time, NumericDate (also the not-before)
       20 50 <16>              -1  member id: the pseudonym's 16 raw bytes
       21 58 20 <32>           -2  holder key: the raw 32-byte Ed25519 public key
       22 6B "440106-0012"     -3  home union code; absent when it is iss
       23 1A <4>               -4  status list index (shortest uint: 1, 2, 3 or 5 bytes)
       24 58 18 <2 x 12>       -5  group digests: n x 12 bytes, sorted; absent when n = 0
    58 40 <64>                the issuer's Ed25519 signature of the RFC 9052 Sig_structure
                              ["Signature1", protected, h'', payload]
    -- the holder proof --
    1A <4>                    proof time, NumericDate (with a station challenge:
                              82 1A <4> 4x <challenge>, i.e. [time, challenge])
    58 40 <64>                the holder key's Ed25519 signature (below)
    -- the disclosures, each a bstr of the CBOR [salt, group] the issuer made --
    4F 82 4C <12> 01          bstr(15): [salt (12 bytes), group code 1 = delivery_rider]

What the holder signs (never sent, both sides build it: ``_holder_message``) is the CBOR
``[HOLDER_PROOF_CONTEXT, SHA-256(credential bytes), proof time, challenge or null,
[disclosure bstr, ...]]``. A group's digest is the first 12 bytes of
``SHA-256(DISCLOSURE_CONTEXT || disclosure bytes)``. ``credential_hash`` is SHA-256 of the
credential's bytes (the ``token``), exactly as they sit in the QR.

Sizes (characters including ``UL1:``; QR version at error correction Q / M, alphanumeric mode;
status index above 65,535; groups disclosed: one):

    =====================================================  =====  =======  ======
    credential                                             chars  Q        M
    =====================================================  =====  =======  ======
    home = issuer, 1 group                                   403  15       12
    home = issuer, 2 groups  (or home 11 chars, 1 group)     423  15       13
    home 11 chars, 2 groups                                  442  16       13
    each further group: +18; each further disclosure: +24; a challenge of c bytes:
    +1.5 (c + 2); home code of h characters: +1.5 (h + 2); status index below 65,536: -3
    =====================================================  =====  =======  ======

A version 15 code at Q holds up to 427 characters. Benchmarks: EU DCC median 553 characters
(version 18 at Q) without holder binding; a naive CWT layout with holder proof 466 (v16);
an SD-JWT VC presentation with key binding about 1,000 (v26 at M).

Layout choices (every byte is 1.5 characters)
---------------------------------------------
- **Untagged COSE_Sign1** (tag 18 omitted, 1 byte): the ``UL1:`` prefix already says what
  follows, and the credential has one byte form everywhere (token, QR, hash). A generic COSE
  tool needs ``D2`` prepended. ``alg`` stays in the protected header (3 bytes) so that a
  generic COSE library verifies the credential with the issuer's key.
- **Short kid**: the first 8 bytes of the issuer key's RFC 7638 SHA-256 thumbprint (the
  43-character kid is its base64url: ``credential_kid``), 10 bytes instead of 45. The
  verifier indexes every key of the trust list by it, once per trust list; a short id that
  matches two keys is refused (``UnknownIssuer``), never guessed. Chance of such a collision
  among 200,000 keys (stations included): about 1e-9.
- **Claims**: ``iss``, ``exp`` and ``iat`` are the RFC 8392 ones. The member id travels as
  its 16 raw bytes under a private label (RFC 8392 ``sub`` is a text StringOrURI; 18 bytes
  instead of 24). The holder key is its raw 32 bytes under a private label instead of ``cnf``
  (8) ``{1: COSE_Key {1: 1, -1: 6, -2: x}}``: the profile fixes OKP/Ed25519, so ``kty`` and
  ``crv`` would carry nothing (35 bytes instead of 43). The status index stands alone: the
  list is the issuer's (``status_lists[iss]``), so the draft's ``status`` claim with a URI
  (about 40 bytes) is not needed. No ``nbf``: ``iat`` is the not-before. The private labels
  -1..-5 take one byte each; IANA reserves labels below -65536 for private use, which would
  cost 4 more bytes per claim, so these numbers are this profile's (``UL1:``) and a new
  layout version may renumber them. Unknown labels are refused.
- **Selective disclosure** (groups such as ``hardship`` are never readable unless disclosed):
  the credential holds one truncated digest per group, sorted (the position of a digest says
  nothing about its group) in one byte string (n + 1 bytes fewer than an array of them). A
  disclosure is the CBOR ``[salt, group]``, the group a one-byte code (:data:`GROUP_CODES`,
  append-only) or, for a group without a code, its name.
  *Digest length, 12 bytes (96 bits)*: the threat is a holder claiming a group they do not
  have, i.e. a second preimage of one of their own n digests. Collisions (the birthday bound)
  do not help, because the issuer picks every hashed input (the salt) and the holder none;
  digests are per credential, so there are no other members' digests to aim at: the cost is
  2**96 / n hash evaluations, within the credential's lifetime. The whole Bitcoin network
  (about 2**69 SHA-256 a second) would need years per forged group; 8 bytes (2**64) would
  be in reach of a determined attacker.
  *Salt length, 12 bytes (96 bits)*: the threat is a station learning an undisclosed group by
  trying every salt with every group name: 2**96 work per member and group. SD-JWT's 128-bit
  salts and full digests would add 4 bytes per group and 4 per disclosure.
- **Holder proof**: a bare Ed25519 signature plus the proof time, not a COSE_Sign1 (which
  would add an array head, an empty protected header, an unprotected map and a payload head:
  4 bytes, and 2 more for a protected ``alg``) for no gain in soundness: the algorithm is fixed
  by the profile, and the signed bytes start with ``85 78 26`` and the context string
  :data:`HOLDER_PROOF_CONTEXT`, which no RFC 9052 Sig_structure (``"Signature1"``), JWS
  signing input (``eyJ``) or other UnionLedger signature begins with (the holder key is made
  for these proofs only). The credential hash is not sent, so it costs nothing to keep all 32
  bytes. The disclosures are signed too (as SD-JWT's ``sd_hash`` does): nobody but the holder
  can add or strip one. The challenge travels only when a station gave one, so that step 9
  can tell a wrong answer from a forged proof.
- **One encoding**: the verifier refuses a presentation that is not the shortest-form encoding
  of its content (it re-encodes and compares), and base45 is strict, so every character of
  the QR matters (tested: any change is refused). Not zlib: at these sizes it gains nothing
  (the EU DCC measured a median ratio of 1.003).

Verification
------------
:func:`verify_presentation` runs ten numbered checks, in order, each with its own error
(``verifier.errors``, all :class:`~verifier.errors.CredentialError` with a stable ``code`` and
the ``step`` it reports). It is built for the station's hot path: base45 is decoded with
big-integer arithmetic (2.9 us instead of 26 us), the trust list is indexed by short kid once
per trust list (the keyring still decides, and explains, every refusal), the holder message is
assembled from CBOR heads, and the issuer's payload is decoded once and never re-encoded.
Measured (``bench/bench_credential.py``, 2-core development machine): 11,300 verifications a
second, 82-84 % of the raw two-signature pynacl limit (13,500/s: about 15 us of Python around
74 us of signature checks) and 2.3x a pyjwt verifier of the same claims as a JWT pair; p50
0.09 ms, p99 0.11 ms. Issuance: 35,000 a second (raw pynacl signing: 71,000).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, NamedTuple

import cbor2

import keys
from keys import b64url_decode, b64url_encode
from verifier.errors import (
    BadDisclosure,
    ChallengeMismatch,
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
)
from verifier.statuslist import VerifiedStatusList

__all__ = [
    "DIGEST_SIZE",
    "GROUP_CODES",
    "KID_SIZE",
    "PREFIX",
    "SALT_SIZE",
    "IssuedCredential",
    "UnverifiedCredential",
    "VerifiedPresentation",
    "b45decode",
    "b45encode",
    "credential_kid",
    "decode_credential",
    "issue_credential",
    "present",
    "verify_presentation",
]

PREFIX = "UL1:"
"""Layout version 1. Another layout gets another prefix; verifiers refuse what they do not know."""
KID_SIZE = 8
DIGEST_SIZE = 12
SALT_SIZE = 12
MEMBER_ID_SIZE = 16
MAX_DISCLOSURES = 20  # keeps the presentation array's header one byte (3 + 20 <= 23 items)
MAX_TEXT = 4296  # the most alphanumeric characters any QR code holds (version 40-L)
MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime can hold

# COSE (RFC 9052) and CWT (RFC 8392) labels; negative labels are this profile's own claims.
EDDSA = -8
CLAIM_ISS, CLAIM_EXP, CLAIM_IAT = 1, 4, 6
CLAIM_MEMBER, CLAIM_HOLDER_KEY, CLAIM_HOME, CLAIM_STATUS, CLAIM_GROUPS = -1, -2, -3, -4, -5
_REQUIRED = (CLAIM_ISS, CLAIM_EXP, CLAIM_IAT, CLAIM_MEMBER, CLAIM_HOLDER_KEY)
# The label sequences a claims map may have: RFC 8949 deterministic order (01 04 06 20 21 ...).
_CLAIM_LAYOUTS = frozenset(
    (*_REQUIRED, *home, CLAIM_STATUS, *groups)
    for home in ((), (CLAIM_HOME,))
    for groups in ((), (CLAIM_GROUPS,))
)

HOLDER_PROOF_CONTEXT = "unionledger/station-qr/v1 holder proof"
DISCLOSURE_CONTEXT = b"unionledger/station-qr/v1 disclosure\n"

GROUP_CODES: Mapping[str, int] = MappingProxyType(
    {
        # ledger.members.Group. Append only: a code, once given, names its group forever.
        "delivery_rider": 1,
        "courier": 2,
        "ride_hailing_driver": 3,
        "truck_driver": 4,
        "migrant_worker": 5,
        "female_worker": 6,
        "hardship": 7,
        "over_age_worker": 8,
        "model_worker": 9,
    }
)
_GROUP_NAMES = {code: name for name, code in GROUP_CODES.items()}
_UNION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")  # a keys scope
_GROUP_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")

# The fixed bytes around the variable parts (checked in tests against cbor2.dumps).
_PROTECTED_HEAD = bytes([0xA2, 0x01, 0x27, 0x04, 0x40 | KID_SIZE])  # {1: -8, 4: h'<kid>'}
_SIG1_HEAD = b"\x84\x6aSignature1"  # ["Signature1", protected, external_aad, payload]
_EMPTY_AAD = b"\x40"


# -- base45 (RFC 9285) ----------------------------------------------------------------------

_B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_B45_PAIRS = [_B45[i % 45] + _B45[i // 45] for i in range(45 * 45)]
_B45_VALUE = bytes(_B45.index(chr(c)) if chr(c) in _B45 else 0xFF for c in range(256))


def b45encode(data: bytes) -> str:
    """RFC 9285 base45: each 2 bytes -> 3 characters, a final odd byte -> 2."""
    out = []
    n = len(data) & ~1
    for i in range(0, n, 2):
        e, x = divmod((data[i] << 8) | data[i + 1], 2025)
        out.append(_B45_PAIRS[x] + _B45[e])
    if len(data) & 1:
        out.append(_B45_PAIRS[data[-1]])
    return "".join(out)


@functools.lru_cache(maxsize=64)
def _b45_masks(groups: int) -> tuple[int, int, int]:
    low = int.from_bytes(b"\x00\x00\xff" * groups, "big")
    return low << 16, low << 8, low


def b45decode(text: str) -> bytes:
    """Strict inverse of :func:`b45encode` (every string has at most one meaning).

    The arithmetic runs on one big integer instead of a loop per group: the digit values, read
    big-endian, put each 3-character group ``c d e`` in its own 24-bit slot as
    ``c*2**16 + d*2**8 + e``; masking out the three digit planes and summing them with their
    weights gives ``c + 45*d + 2025*e`` per slot (at most 17 bits, so no slot carries into the
    next); a group is valid when its slot's top byte is zero. 2.9 us for a 420-character QR
    instead of 4.7 us (a per-group loop) or 26 us (the ``base45`` package); this runs on every scan.

    Raises:
        ValueError: a character outside the base45 alphabet, a dangling character, or a group
            whose value exceeds 65535 (255 for a final pair).
    """
    if not text.isascii():
        raise ValueError("base45 is ASCII")
    digits = text.encode("ascii").translate(_B45_VALUE)
    if b"\xff" in digits:
        raise ValueError("not a base45 character")
    n, rest = divmod(len(digits), 3)
    if rest == 1:
        raise ValueError("base45 length leaves a dangling character")
    plane_c, plane_d, plane_e = _b45_masks(n)
    value = int.from_bytes(digits[: 3 * n], "big")
    slots = ((value & plane_c) >> 16) + 45 * ((value & plane_d) >> 8) + 2025 * (value & plane_e)
    wide = slots.to_bytes(3 * n, "big")
    if wide[0::3].count(0) != n:
        raise ValueError("base45 group above 65535")
    out = bytearray(2 * n)
    out[0::2] = wide[1::3]
    out[1::2] = wide[2::3]
    if rest:
        last = digits[-2] + 45 * digits[-1]
        if last > 0xFF:
            raise ValueError("base45 final pair above 255")
        out.append(last)
    return bytes(out)


# -- small CBOR helpers ------------------------------------------------------------------------


def _head(major: int, n: int) -> bytes:
    """A CBOR head of major type ``major`` and argument ``n`` (shortest form)."""
    if n < 24:
        return bytes([major << 5 | n])
    if n < 0x100:
        return bytes([major << 5 | 24, n])
    if n < 0x10000:
        return bytes([major << 5 | 25]) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes([major << 5 | 26]) + n.to_bytes(4, "big")
    return bytes([major << 5 | 27]) + n.to_bytes(8, "big")


def _bstr(data: bytes) -> bytes:
    return _head(2, len(data)) + data


def _sig_structure(protected_item: bytes, payload_item: bytes) -> bytes:
    """RFC 9052 section 4.4 ``Sig_structure`` for COSE_Sign1 with empty external AAD, from the
    *encoded* protected and payload byte strings (head included), exactly as they were sent."""
    return _SIG1_HEAD + protected_item + _EMPTY_AAD + payload_item


_HOLDER_HEAD = b"\x85" + cbor2.dumps(HOLDER_PROOF_CONTEXT) + b"\x58\x20"


def _holder_message(
    credential_hash: bytes, proof_time: int, challenge: bytes | None, disclosures: Sequence[bytes]
) -> bytes:
    """What the holder key signs (never sent: both sides build it), the CBOR encoding of
    ``[HOLDER_PROOF_CONTEXT, credential_hash, proof_time, challenge / null, [disclosure...]]``.
    Assembled from heads rather than by cbor2.dumps: half the time, same bytes (tested)."""
    return b"".join(
        [
            _HOLDER_HEAD,
            credential_hash,
            _head(0, proof_time),
            b"\xf6" if challenge is None else _bstr(challenge),
            _head(4, len(disclosures)),
            *map(_bstr, disclosures),
        ]
    )


_DISCLOSURE_HASH = hashlib.sha256(DISCLOSURE_CONTEXT)


def disclosure_digest(disclosure: bytes) -> bytes:
    """The digest a credential holds for ``disclosure``: the first :data:`DIGEST_SIZE` bytes
    of SHA-256(:data:`DISCLOSURE_CONTEXT` || disclosure)."""
    h = _DISCLOSURE_HASH.copy()
    h.update(disclosure)
    return h.digest()[:DIGEST_SIZE]


def credential_kid(kid: str) -> bytes:
    """The short key id a credential carries: the first :data:`KID_SIZE` bytes of the RFC 7638
    SHA-256 thumbprint (``kid`` is its base64url form).

    Raises:
        ValueError: ``kid`` is not base64url of a 32-byte thumbprint.
    """
    raw = b64url_decode(kid)
    if len(raw) != 32:
        raise ValueError("a key id is the base64url of a 32-byte SHA-256 thumbprint")
    return raw[:KID_SIZE]


# -- the credential ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    """What the issuer hands the member's phone: the credential, one disclosure per group
    (group name -> disclosure bytes), and ``credential_hash`` = SHA-256(token)."""

    token: bytes
    disclosures: dict[str, bytes]
    credential_hash: bytes


class UnverifiedCredential(NamedTuple):
    """The claims of a credential, decoded but NOT verified (for a wallet to show, and the
    verifier's intermediate). Times are NumericDate seconds."""

    kid: bytes
    issuer_union: str
    home_union: str
    member_id: str
    holder_key: keys.PublicKey
    issued_at: int
    expires_at: int
    status_index: int
    digests: bytes


def _union(value: object, what: str) -> str:
    if not isinstance(value, str) or not _UNION_RE.match(value):
        raise ValueError(f"{what} must be a union code (letters, digits, ._:- up to 64)")
    return value


def _group_value(group: object) -> int | str:
    if not isinstance(group, str) or not _GROUP_RE.match(group):
        raise ValueError(f"bad group name {group!r}")
    return GROUP_CODES.get(group, group)


def _seconds(value: datetime, what: str) -> int:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{what} must be an aware datetime")
    seconds = int(value.timestamp() // 1)
    if not 0 <= seconds <= MAX_TIME:
        raise ValueError(f"{what} is out of range")
    return seconds


def issue_credential(
    *,
    issuer_key: keys.PrivateKey,
    issuer_kid: str,
    issuer_union: str,
    member_id: str,
    home_union: str,
    holder_public_key: keys.PublicKey,
    groups: Sequence[str],
    status_index: int,
    issued_at: datetime,
    expires_at: datetime,
    rng: Callable[[int], bytes] = os.urandom,
) -> IssuedCredential:
    """Issue a station credential (layout: module docstring). Pure but for ``rng`` (salts).

    Raises:
        ValueError: ``issuer_kid`` is not ``issuer_key``'s id; a bad union code, member id
            (the base64url of 16 bytes), group name (or a group twice), status index
            (0 <= i < 2**32), time range, or ``rng`` output.
    """
    if issuer_kid != issuer_key.key_id:
        raise ValueError("issuer_kid is not the RFC 7638 key id of issuer_key")
    _union(issuer_union, "issuer_union")
    _union(home_union, "home_union")
    try:
        member = b64url_decode(member_id)
    except ValueError:
        member = b""
    if len(member) != MEMBER_ID_SIZE:
        raise ValueError(f"member_id must be the base64url of {MEMBER_ID_SIZE} bytes")
    if type(status_index) is not int or not 0 <= status_index < 2**32:
        raise ValueError("status_index must be an integer, 0 <= i < 2**32")
    iat, exp = _seconds(issued_at, "issued_at"), _seconds(expires_at, "expires_at")
    if exp <= iat:
        raise ValueError("expires_at must be later than issued_at")
    if isinstance(groups, str) or len(set(groups)) != len(groups):
        raise ValueError("groups must be a sequence of distinct group names")
    if len(groups) > MAX_DISCLOSURES:
        raise ValueError(f"at most {MAX_DISCLOSURES} groups")
    disclosures: dict[str, bytes] = {}
    digests = []
    for group in sorted(groups):
        salt = rng(SALT_SIZE)
        if not isinstance(salt, bytes) or len(salt) != SALT_SIZE:
            raise ValueError(f"rng must return {SALT_SIZE} bytes")
        disclosure = cbor2.dumps([salt, _group_value(group)])
        disclosures[group] = disclosure
        digests.append(disclosure_digest(disclosure))
    if len(set(digests)) != len(digests):  # pragma: no cover - a 96-bit collision
        raise ValueError("two disclosures share a digest: issue again")
    claims: dict[int, Any] = {
        CLAIM_ISS: issuer_union,
        CLAIM_EXP: exp,
        CLAIM_IAT: iat,
        CLAIM_MEMBER: member,
        CLAIM_HOLDER_KEY: holder_public_key.to_bytes(),
    }
    if home_union != issuer_union:
        claims[CLAIM_HOME] = home_union
    claims[CLAIM_STATUS] = status_index
    if digests:
        # Sorted, so the position of a digest says nothing about which group it hides.
        claims[CLAIM_GROUPS] = b"".join(sorted(digests))
    payload = cbor2.dumps(claims)  # inserted in RFC 8949 deterministic order (tested)
    protected = _PROTECTED_HEAD + credential_kid(issuer_kid)
    signature = issuer_key.sign(_sig_structure(_bstr(protected), _bstr(payload)))
    token = b"\x84" + _bstr(protected) + b"\xa0" + _bstr(payload) + _bstr(signature)
    return IssuedCredential(token, disclosures, hashlib.sha256(token).digest())


def _claims(kid: bytes, payload: bytes) -> UnverifiedCredential:
    """Decode and type-check the CWT claims (step 2). Raises CredentialMalformed only.

    The claims are the issuer's signed bytes, used as they are and never re-encoded, so only
    their shape is checked here, not their encoding; but a label given twice (which cbor2
    would silently resolve to the last value) is refused: the map's head must count exactly
    the labels found.
    """
    try:
        claims = cbor2.loads(payload)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as e:
        raise CredentialMalformed(f"credential claims are not CBOR: {type(e).__name__}") from e
    if type(claims) is not dict or payload[0] != 0xA0 + len(claims):
        raise CredentialMalformed("credential claims are not one CBOR map with distinct labels")
    if tuple(claims) not in _CLAIM_LAYOUTS:
        raise CredentialMalformed("credential claims hold an unknown label or are out of order")
    iss, exp, iat = claims.get(CLAIM_ISS), claims.get(CLAIM_EXP), claims.get(CLAIM_IAT)
    member, holder = claims.get(CLAIM_MEMBER), claims.get(CLAIM_HOLDER_KEY)
    home, index = claims.get(CLAIM_HOME, iss), claims.get(CLAIM_STATUS)
    digests = claims.get(CLAIM_GROUPS, b"")
    if (
        type(iss) is not str
        or type(home) is not str
        or (CLAIM_HOME in claims and home == iss)
        or type(exp) is not int
        or type(iat) is not int
        or not 0 <= iat < exp <= MAX_TIME
        or type(member) is not bytes
        or len(member) != MEMBER_ID_SIZE
        or type(holder) is not bytes
        or type(index) is not int
        or index < 0
        or type(digests) is not bytes
        or len(digests) % DIGEST_SIZE
        or (CLAIM_GROUPS in claims and not digests)
    ):
        raise CredentialMalformed("a credential claim is missing or of the wrong type or value")
    try:
        holder_key = keys.PublicKey(holder)
    except keys.MalformedKey as e:
        raise CredentialMalformed("the credential's holder key is not an Ed25519 public key") from e
    return UnverifiedCredential(
        kid, iss, home, b64url_encode(member), holder_key, iat, exp, index, digests
    )


def _split_token(token: bytes) -> tuple[list[Any], bytes]:
    """The decoded COSE_Sign1 of a credential token and its protected kid (step 2)."""
    try:
        cose = cbor2.loads(token)
        canonical = cbor2.dumps(cose) == token
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as e:
        raise CredentialMalformed(f"credential is not CBOR: {type(e).__name__}") from e
    if not canonical or type(cose) is not list:
        raise CredentialMalformed("credential is not one canonical CBOR item")
    return cose, _cose_kid(cose)


def _cose_kid(cose: list[Any]) -> bytes:
    if (
        len(cose) != 4
        or type(cose[0]) is not bytes
        or len(cose[0]) != len(_PROTECTED_HEAD) + KID_SIZE
        or not cose[0].startswith(_PROTECTED_HEAD)
        or type(cose[1]) is not dict
        or cose[1]
        or type(cose[2]) is not bytes
        or type(cose[3]) is not bytes
        or len(cose[3]) != 64
    ):
        raise CredentialMalformed("credential is not an untagged COSE_Sign1 of this profile")
    return bytes(cose[0][len(_PROTECTED_HEAD) :])


def decode_credential(token: bytes) -> UnverifiedCredential:
    """The claims of ``token`` WITHOUT verifying anything (for a wallet's display).

    Raises:
        CredentialMalformed: not a credential of this profile.
    """
    cose, kid = _split_token(bytes(token))
    return _claims(kid, cose[2])


def present(
    credential_token: bytes,
    holder_key: keys.PrivateKey,
    *,
    disclosures: Sequence[bytes],
    now: datetime,
    challenge: bytes | None = None,
) -> str:
    """The QR text: ``UL1:`` + base45(presentation), with a holder proof made at ``now``.

    Raises:
        CredentialMalformed: ``credential_token`` is not a credential of this profile.
        ValueError: ``holder_key`` is not the credential's holder key, more than
            :data:`MAX_DISCLOSURES` disclosures, or ``challenge`` is not bytes.
    """
    token = bytes(credential_token)
    if decode_credential(token).holder_key != holder_key.public_key:
        raise ValueError("holder_key is not the holder key this credential names")
    chosen = [bytes(d) for d in disclosures]
    if len(chosen) > MAX_DISCLOSURES:
        raise ValueError(f"at most {MAX_DISCLOSURES} disclosures")
    if challenge is not None and not isinstance(challenge, bytes):
        raise ValueError("challenge must be bytes")
    proof_time = _seconds(now, "now")
    message = _holder_message(hashlib.sha256(token).digest(), proof_time, challenge, chosen)
    signature = holder_key.sign(message)
    time_item = proof_time if challenge is None else [proof_time, challenge]
    data = b"".join(
        [
            _head(4, 3 + len(chosen)),
            token,
            cbor2.dumps(time_item),
            _bstr(signature),
            *map(_bstr, chosen),
        ]
    )
    return PREFIX + b45encode(data)


# -- verification ------------------------------------------------------------------------------


class VerifiedPresentation(NamedTuple):
    """A presentation that passed every check (immutable). ``groups`` holds only the
    disclosed groups; ``presentation_hash`` is SHA-256 of the decoded presentation bytes (what
    an offline redemption record carries); ``proof_time`` is the holder proof's time in
    NumericDate seconds. A NamedTuple rather than a frozen dataclass: it is built on every
    scan, in a third of the time."""

    member_id: str
    home_union: str
    issuer_union: str
    groups: frozenset[str]
    expires_at: datetime
    holder_key: keys.PublicKey
    credential_hash: bytes
    presentation_hash: bytes
    status_index: int
    proof_time: int


class _KeyEntry(NamedTuple):
    """A trust-list key, its times as seconds (``_NEVER`` for none), for the fast path."""

    kid: str
    role: keys.Role
    scope: str | None
    not_before: int
    not_after: int
    revoked_at: int
    public_key: keys.PublicKey


_NEVER = MAX_TIME + 1
_TRUST_CACHE: dict[int, tuple[keys.TrustList, dict[bytes, tuple[_KeyEntry, ...]]]] = {}
_TRUST_CACHE_SIZE = 8


def _seconds_or_never(value: datetime | None) -> int:
    return _NEVER if value is None else int(value.timestamp())


def _keys_by_short_kid(trust_list: keys.TrustList) -> dict[bytes, tuple[_KeyEntry, ...]]:
    """Short key id -> every key of the trust list whose id starts with it, built once per
    trust list (the pre-resolved lookup). The cache holds the trust list itself, so its ``id``
    cannot be reused by another object while cached."""
    hit = _TRUST_CACHE.get(id(trust_list))
    if hit is not None and hit[0] is trust_list:
        return hit[1]
    found: dict[bytes, list[_KeyEntry]] = {}
    for r in trust_list.keyring:
        entry = _KeyEntry(
            r.kid,
            r.role,
            r.scope,
            int(r.not_before.timestamp()),
            _seconds_or_never(r.not_after),
            _seconds_or_never(r.revoked_at),
            r.public_key,
        )
        found.setdefault(credential_kid(r.kid), []).append(entry)
    index = {short: tuple(entries) for short, entries in found.items()}
    while len(_TRUST_CACHE) >= _TRUST_CACHE_SIZE:
        _TRUST_CACHE.pop(next(iter(_TRUST_CACHE), 0), None)
    _TRUST_CACHE[id(trust_list)] = (trust_list, index)
    return index


class _Parsed(NamedTuple):
    credential: bytes
    protected_item: bytes
    payload_item: bytes
    issuer_signature: bytes
    claims: UnverifiedCredential
    proof_time: int
    challenge: bytes | None
    holder_signature: bytes
    disclosures: list[bytes]


def _decode_text(text: str) -> bytes:
    """Step 1 (prefix and version) and the base45 of step 2."""
    if not text.startswith(PREFIX):
        if text[:2] == "UL" and text[3:4] == ":":
            raise CredentialMalformed(f"QR layout {text[:3]} is not supported (only {PREFIX})")
        raise CredentialMalformed(f"not a station QR presentation (no {PREFIX} prefix)")
    if len(text) > MAX_TEXT:
        raise CredentialMalformed("presentation longer than any QR code")
    try:
        return b45decode(text[len(PREFIX) :])
    except ValueError as e:
        raise CredentialMalformed(f"presentation is not base45: {e}") from e


def _proof_time(item: object) -> tuple[int, bytes | None]:
    """The holder proof's time and challenge: ``time`` or ``[time, challenge]``."""
    if type(item) is int:
        proof_time, challenge = item, None
    elif type(item) is list and len(item) == 2 and type(item[1]) is bytes:
        proof_time, challenge = item
    else:
        raise CredentialMalformed("holder proof time is not a NumericDate (or [time, challenge])")
    if type(proof_time) is not int or not 0 <= proof_time <= MAX_TIME:
        raise CredentialMalformed("holder proof time is not a NumericDate in range")
    return proof_time, challenge


def _parse(text: str) -> tuple[_Parsed, bytes]:
    """Steps 1 and 2: prefix, base45, CBOR, structure and claim types."""
    data = _decode_text(text)
    # One byte of array head (3 to 23 items), then the credential: its COSE_Sign1 head 0x84.
    if len(data) < 2 or not 0x83 <= data[0] <= 0x97 or data[1] != 0x84:
        raise CredentialMalformed("presentation is not an array starting with a COSE_Sign1")
    try:
        items = cbor2.loads(data)
        canonical = cbor2.dumps(items) == data
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as e:
        raise CredentialMalformed(f"presentation is not CBOR: {type(e).__name__}") from e
    if not canonical or type(items) is not list:
        raise CredentialMalformed("presentation is not one canonical CBOR array")
    cose, time_item, holder_signature, *disclosures = items
    if type(cose) is not list:
        raise CredentialMalformed("presentation does not start with a COSE_Sign1")
    kid = _cose_kid(cose)
    protected, payload = cose[0], cose[2]
    # The credential's exact bytes, sliced out of the presentation (never re-encoded): the head
    # 0x84, the protected bstr, 0xa0, the payload bstr and the 64-byte signature (0x58 0x40).
    protected_end = 2 + 1 + len(protected)
    size = len(payload)  # its bstr head: 1, 2, 3 or 5 bytes (shortest form, checked above)
    head = 1 + (size >= 24) + (size >= 0x100) + 2 * (size >= 0x10000)
    payload_end = protected_end + 1 + head + size
    credential = data[1 : payload_end + 66]
    proof_time, challenge = _proof_time(time_item)
    if type(holder_signature) is not bytes or len(holder_signature) != 64:
        raise CredentialMalformed("holder proof signature is not 64 bytes")
    for disclosure in disclosures:
        if type(disclosure) is not bytes:
            raise CredentialMalformed("a disclosure is not a byte string")
    parsed = _Parsed(
        credential,
        data[2:protected_end],
        data[protected_end + 1 : payload_end],
        cose[3],
        _claims(kid, payload),
        proof_time,
        challenge,
        holder_signature,
        disclosures,
    )
    return parsed, data


def _issuer_key(
    trust_list: keys.TrustList, claims: UnverifiedCredential, now: datetime, leeway: timedelta
) -> keys.PublicKey:
    """Step 3: the trust list is not expired (it might miss a revocation); resolve the short
    kid in it (a collision is an error, never a guess) and judge the key: role issuer, of union
    ``iss``, valid at ``iat``."""
    if now >= trust_list.expires_at + leeway:
        raise UnknownIssuer(f"the trust list expired at {trust_list.expires_at}: refresh it")
    entries = _keys_by_short_kid(trust_list).get(claims.kid)
    if not entries:
        raise UnknownIssuer(f"no key {claims.kid.hex()} in the trust list")
    if len(entries) > 1:
        raise UnknownIssuer(f"key id {claims.kid.hex()} matches {len(entries)} keys: refused")
    key, iat = entries[0], claims.issued_at
    # The common case in integers (keys.KeyRecord.check_valid_at's rule: not_before <= t <
    # not_after and t < revoked_at); every refusal is left to the keyring, which explains it.
    if (
        key.role is keys.Role.ISSUER
        and key.scope == claims.issuer_union
        and key.not_before <= iat < key.not_after
        and iat < key.revoked_at
    ):
        return key.public_key
    try:
        return trust_list.verification_key(
            key.kid, keys.Role.ISSUER, datetime.fromtimestamp(iat, UTC), scope=claims.issuer_union
        )
    except keys.KeysError as e:
        raise UnknownIssuer(f"issuer key {key.kid}: {e.code}: {e}") from e


def _check_status(
    status_lists: Mapping[str, VerifiedStatusList],
    claims: UnverifiedCredential,
    now: datetime,
    leeway: timedelta,
    max_age: timedelta | None,
) -> None:
    """Step 6: the issuer's status list is present and fresh, the index in range, not set."""
    status_list = status_lists.get(claims.issuer_union)
    if status_list is None:
        raise StatusListMissing(f"no status list of issuer {claims.issuer_union}")
    if status_list.issuer != claims.issuer_union:
        raise StatusListMissing(
            f"the status list held for {claims.issuer_union} is {status_list.issuer}'s"
        )
    reason = status_list.stale_reason(now, max_age=max_age, leeway=leeway)
    if reason is not None:
        raise StatusListStale(reason)
    if claims.status_index >= status_list.size:
        raise StatusIndexOutOfRange(
            f"status index {claims.status_index} beyond the list's {status_list.size}"
        )
    status = status_list.status(claims.status_index)
    if status:
        what = "suspended" if status == 2 else "revoked"
        raise CredentialRevoked(f"credential {what} (status {status}) by {claims.issuer_union}")


def _has_digest(digests: bytes, digest: bytes) -> bool:
    at = digests.find(digest)
    while at > 0 and at % DIGEST_SIZE:  # a match straddling two digests is no match
        at = digests.find(digest, at + 1)
    return at >= 0


def _disclosed_groups(digests: bytes, disclosures: list[bytes]) -> frozenset[str]:
    """Step 10: each disclosure matches a digest of the credential and names a group.

    A disclosure that matches a digest holds bytes the issuer wrote (or a second preimage of
    a 96-bit digest), so its encoding is not re-checked; its shape and group still are.
    """
    groups: set[str] = set()
    for disclosure in disclosures:
        if not _has_digest(digests, disclosure_digest(disclosure)):
            raise BadDisclosure("a disclosure matches no digest of the credential")
        try:
            value = cbor2.loads(disclosure)
        except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as e:
            raise BadDisclosure(f"a disclosure is not CBOR: {type(e).__name__}") from e
        if type(value) is not list or len(value) != 2:
            raise BadDisclosure("a disclosure is not [salt, group]")
        salt, group = value
        if type(group) is int:
            name = _GROUP_NAMES.get(group)
        elif type(group) is str and group not in GROUP_CODES and _GROUP_RE.match(group):
            name = group
        else:
            name = None
        if type(salt) is not bytes or len(salt) != SALT_SIZE or name is None:
            raise BadDisclosure(f"a disclosure names no group this station knows: {group!r}")
        if name in groups:
            raise BadDisclosure(f"group {name} is disclosed twice")
        groups.add(name)
    return frozenset(groups)


def verify_presentation(
    text: str,
    *,
    trust_list: keys.TrustList,
    status_lists: Mapping[str, VerifiedStatusList],
    now: datetime,
    leeway: timedelta = timedelta(seconds=30),
    max_proof_age: timedelta = timedelta(seconds=90),
    challenge: bytes | None = None,
    status_max_age: timedelta | None = None,
) -> VerifiedPresentation:
    """Verify a station QR presentation at ``now``; pure (trust and status lists are inputs).

    The checks, in this order, each with its own error (docs/credentials.md):

    1. the ``UL1:`` prefix (version)                          -- CredentialMalformed
    2. base45, canonical CBOR, the COSE_Sign1 and claim types  -- CredentialMalformed
    3. the issuer key: the trust list not expired; the key found by its short id (one
       match), role issuer, of union ``iss``, valid at ``iat`` (not before, not expired, not
       revoked)                                               -- UnknownIssuer
    4. the issuer's signature                                 -- CredentialSignatureInvalid
    5. ``now < exp + leeway`` and ``iat <= now + leeway``
                                                  -- CredentialExpired, CredentialNotYetValid
    6. the issuer's status list (``status_lists[iss]``): present, its own, fresh (``exp``,
       ``ttl``, ``status_max_age``; ``leeway`` for the clock), the index in range, the status
       0             -- StatusListMissing, StatusListStale, StatusIndexOutOfRange, CredentialRevoked
    7. the holder proof's signature, by the credential's holder key, over the credential's
       hash, the proof time, the challenge and the disclosures -- HolderProofInvalid
    8. ``|now - proof time| <= max_proof_age + leeway``         -- HolderProofStale
    9. when ``challenge`` is given, the proof answers it        -- ChallengeMismatch
    10. every disclosure matches a digest and names a group     -- BadDisclosure

    Raises:
        CredentialError: one of the subclasses above, and nothing else for any ``text``.
        TypeError: ``text`` is not a string. ValueError: ``now`` is naive.
    """
    if not isinstance(text, str):
        raise TypeError("a presentation is the QR code's text")
    now_s = _seconds(now, "now")
    leeway_s = int(leeway.total_seconds())
    parsed, data = _parse(text)  # steps 1, 2
    claims = parsed.claims
    issuer_key = _issuer_key(trust_list, claims, now, leeway)  # step 3
    try:  # step 4
        issuer_key.verify(
            parsed.issuer_signature, _sig_structure(parsed.protected_item, parsed.payload_item)
        )
    except keys.InvalidSignature as e:
        raise CredentialSignatureInvalid("the issuer's signature does not verify") from e
    if now_s >= claims.expires_at + leeway_s:  # step 5
        raise CredentialExpired(f"credential expired at {_iso(claims.expires_at)}")
    if claims.issued_at > now_s + leeway_s:
        raise CredentialNotYetValid(f"credential is issued at {_iso(claims.issued_at)}")
    _check_status(status_lists, claims, now, leeway, status_max_age)  # step 6
    credential_hash = hashlib.sha256(parsed.credential).digest()
    message = _holder_message(
        credential_hash, parsed.proof_time, parsed.challenge, parsed.disclosures
    )
    try:  # step 7
        claims.holder_key.verify(parsed.holder_signature, message)
    except keys.InvalidSignature as e:
        raise HolderProofInvalid("the holder proof is not by the credential's holder") from e
    if abs(now_s - parsed.proof_time) > int(max_proof_age.total_seconds()) + leeway_s:  # step 8
        raise HolderProofStale(
            f"holder proof made at {_iso(parsed.proof_time)}, {now_s - parsed.proof_time} s"
            " from now: refresh the QR code"
        )
    if challenge is not None and (  # step 9
        parsed.challenge is None or not hmac.compare_digest(parsed.challenge, challenge)
    ):
        raise ChallengeMismatch("the holder proof does not answer this station's challenge")
    groups = _disclosed_groups(claims.digests, parsed.disclosures)  # step 10
    return VerifiedPresentation(  # positional: a third faster than keywords, in field order
        claims.member_id,
        claims.home_union,
        claims.issuer_union,
        groups,
        datetime.fromtimestamp(claims.expires_at, UTC),
        claims.holder_key,
        credential_hash,
        hashlib.sha256(data).digest(),
        claims.status_index,
        parsed.proof_time,
    )


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
