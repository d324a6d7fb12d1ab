"""The interoperable credential: the membership as an IETF SD-JWT VC with key binding.

The same facts as the station QR credential (``verifier.credential``: issuing union, member
pseudonym, home union, holder key, validity, status-list index, groups), encoded for wallets and
online exchange, where size does not matter, as an SD-JWT (RFC 9901) of the SD-JWT VC profile
(draft-ietf-oauth-sd-jwt-vc). docs/sd-jwt.md specifies every byte, with a worked example that
the tests regenerate. Pure: keys, times and salts are passed in.

Wire format
-----------
``<issuer-signed JWT>~<disclosure>~...~<disclosure>~[<KB-JWT>]`` (RFC 9901 compact form; the
issued credential ends with ``~``, a presentation appends the Key Binding JWT after it).

- Issuer-signed JWT: header ``{"alg": "EdDSA", "kid": <RFC 7638 kid of an issuer key of the
  trust list>, "typ": "dc+sd-jwt"}``; claims ``iss``, ``iat``, ``exp``, ``vct``, ``sub`` (the
  member pseudonym: base64url of 16 bytes), ``home_union``, ``cnf`` ``{"jwk": <the holder's
  OKP/Ed25519 public JWK>}``, ``status`` ``{"status_list": {"idx": i, "uri": u}}``,
  ``_sd_alg`` ``"sha-256"`` and ``groups``: an array of ``{"...": <digest>}`` only. Header and
  claims are canonical JSON (``verifier.canonical``), so the same inputs give the same token
  and any JWT library verifies it (tested with pyjwt).
- Disclosure (one per group): base64url of the JSON array ``[salt, group]``, the salt the
  base64url of 16 random bytes (RFC 9901's recommended 128 bits). Digest: base64url of
  SHA-256 over the disclosure's ASCII characters.
- ``groups`` is padded with decoy digests (SHA-256 of 16 random bytes) to a multiple of
  :data:`GROUP_BLOCK` (at least one block) and sorted, so neither the number of groups
  (beyond "more than four") nor their order shows.
- KB-JWT: header ``{"alg": "EdDSA", "typ": "kb+jwt"}``, claims ``iat``, ``aud``, ``nonce`` and
  ``sd_hash`` (base64url SHA-256 of everything before the KB-JWT, the last ``~`` included),
  signed by the holder key of ``cnf``.

Choices
-------
- ``typ`` is ``dc+sd-jwt``, the media type of the current SD-JWT VC draft. The draft used
  ``vc+sd-jwt`` until November 2024 and recommends accepting both for a transition period;
  we have never issued ``vc+sd-jwt``, so only ``dc+sd-jwt`` is accepted.
- Groups are *array element* disclosures (RFC 9901: ``[salt, value]`` behind ``{"...":
  digest}``): a member's groups are a set of values of one kind, and that is what an array
  of them is. A generic SD-JWT library processes the payload to ``"groups": [<the disclosed
  ones>]`` (undisclosed elements vanish), the disclosures carry no claim name, and decoys fit in
  naturally. Object-property disclosures (``"hardship": true`` under ``_sd``) would give each
  group a claim name at the top level, where it could collide with registered claims, and the
  processed payload would no longer say "these are the groups".
- ``iss`` names the issuing union: its code (``440000``) or an https URL whose last path
  segment is the code (``https://ledger.example.org/unions/440000``). The verifier accepts the
  credential only when ``kid`` is an issuer key of *that* union in the trust list (the key's
  scope), valid at ``iat``: a union's key cannot vouch for another union's ``iss``.
- The profile is strict: exactly these claims and header members, every digest a SHA-256 one,
  base64url canonical and unpadded, JSON without duplicate members, so that every character of
  a presentation matters (tested by mutation). The JWS parts are parsed and checked here, as in
  ``verifier.statuslist``, rather than by pyjwt (which accepts padded segments, for one, and
  raises its own exceptions); the signatures are pynacl's via ``keys``. The tests check that
  pyjwt verifies both JWTs and signs the issuer's claims to the identical token.

Verification (:func:`verify_sd_jwt`) runs the station's ten numbered checks
(``verifier.credential``), each with its own :class:`~verifier.errors.CredentialError`.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import keys
from keys import b64url_decode, b64url_encode
from verifier.canonical import canonical_bytes
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
    "GROUP_BLOCK",
    "KB_JWT_TYP",
    "SALT_SIZE",
    "SD_ALG",
    "SD_JWT_TYP",
    "VerifiedSdJwt",
    "disclosure_digest",
    "issue_sd_jwt",
    "issuer_union_of",
    "key_binding_jwt",
    "present_sd_jwt",
    "verify_sd_jwt",
]

SD_JWT_TYP = "dc+sd-jwt"
KB_JWT_TYP = "kb+jwt"
SD_ALG = "sha-256"
SALT_SIZE = 16
"""Bytes of randomness per salt (RFC 9901 recommends at least 128 bits)."""
GROUP_BLOCK = 4
"""``groups`` holds a multiple of this many digests (at least one block), decoys included."""
MAX_GROUPS = 64
MAX_TEXT = 65536
"""The longest text verified: an issued credential with :data:`MAX_GROUPS` groups is ~10 kB."""
MEMBER_ID_SIZE = 16
MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime can hold
DEFAULT_LEEWAY = timedelta(seconds=30)
DEFAULT_MAX_PROOF_AGE = timedelta(minutes=5)
"""How old a KB-JWT may be: the wallet signs it right after the verifier's nonce arrives."""

CLAIMS = frozenset(
    {"_sd_alg", "cnf", "exp", "groups", "home_union", "iat", "iss", "status", "sub", "vct"}
)
KB_CLAIMS = frozenset({"aud", "iat", "nonce", "sd_hash"})
_JWK_MEMBERS = frozenset({"crv", "kty", "x"})
_UNION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")  # a keys scope
_GROUP_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")
_KID_RE = re.compile(r"[A-Za-z0-9_-]{43}\Z")  # base64url of a SHA-256 thumbprint
_HTTPS_URL_RE = re.compile(r"https://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._:~%-]+)+\Z")


def _sha256_b64(text: str) -> str:
    return b64url_encode(hashlib.sha256(text.encode("ascii")).digest())


def disclosure_digest(disclosure: str) -> str:
    """The digest a credential holds for ``disclosure``: base64url(SHA-256(its ASCII bytes)).

    RFC 9901 hashes the disclosure *as sent* (the base64url string), never the decoded JSON.
    The same function gives a KB-JWT's ``sd_hash`` of the presented SD-JWT.

    Raises:
        ValueError: ``disclosure`` is not ASCII.
    """
    return _sha256_b64(disclosure)


def issuer_union_of(iss: str) -> str | None:
    """The union code an ``iss`` value names, or ``None``: the code itself, or the last path
    segment of an https URL (``https://ledger.example.org/unions/440000`` -> ``440000``)."""
    if _UNION_RE.match(iss):
        return iss
    if _HTTPS_URL_RE.match(iss):
        last = iss.rsplit("/", 1)[1]
        if _UNION_RE.match(last):
            return last
    return None


def _seconds(value: datetime, what: str) -> int:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{what} must be an aware datetime")
    seconds = int(value.timestamp() // 1)
    if not 0 <= seconds <= MAX_TIME:
        raise ValueError(f"{what} is out of range")
    return seconds


def _sign(header: dict[str, Any], claims: dict[str, Any], key: keys.PrivateKey) -> str:
    """A compact JWS of canonical ``header`` and ``claims``, EdDSA-signed by ``key``."""
    signing_input = (
        b64url_encode(canonical_bytes(header)) + "." + b64url_encode(canonical_bytes(claims))
    )
    return signing_input + "." + b64url_encode(key.sign(signing_input.encode("ascii")))


# -- issuing and presenting --------------------------------------------------------------------


def _group_names(groups: Sequence[str]) -> list[str]:
    """``groups`` sorted, after checking they are distinct group names, at most MAX_GROUPS."""
    if isinstance(groups, str) or len(set(groups)) != len(groups):
        raise ValueError("groups must be a sequence of distinct group names")
    if len(groups) > MAX_GROUPS:
        raise ValueError(f"at most {MAX_GROUPS} groups")
    for group in groups:
        if not isinstance(group, str) or not _GROUP_RE.match(group):
            raise ValueError(f"bad group name {group!r}")
    return sorted(groups)


def issue_sd_jwt(
    *,
    issuer_key: keys.PrivateKey,
    kid: str,
    issuer: str,
    vct: str,
    member_id: str,
    home_union: str,
    holder_jwk: Mapping[str, Any],
    groups: Sequence[str],
    iat: datetime,
    exp: datetime,
    status_index: int,
    status_uri: str,
    salt: Callable[[], bytes] | None = None,
) -> str:
    """Issue the SD-JWT VC (module docstring): ``<issuer-signed JWT>~<disclosure>~...~``.

    ``salt`` returns the random bytes for one salt or decoy (default: :data:`SALT_SIZE` bytes
    of :func:`secrets.token_bytes`); pass a deterministic one only for examples and tests.

    Raises:
        ValueError: ``kid`` is not ``issuer_key``'s id; ``issuer`` names no union code; an
            empty ``vct`` or ``status_uri``; a bad union code, member id (the base64url of 16
            bytes), holder JWK (not a public OKP/Ed25519 one), group name (or a group twice),
            status index (0 <= i < 2**32) or time range; or ``salt`` returning fewer than
            :data:`SALT_SIZE` bytes or the same bytes twice.
    """
    if kid != issuer_key.key_id:
        raise ValueError("kid is not the RFC 7638 key id of issuer_key")
    if not isinstance(issuer, str) or issuer_union_of(issuer) is None:
        raise ValueError("issuer must be a union code or an https URL ending in one")
    if not isinstance(vct, str) or not vct:
        raise ValueError("vct must be a non-empty string")
    if not isinstance(home_union, str) or not _UNION_RE.match(home_union):
        raise ValueError("home_union must be a union code (letters, digits, ._:- up to 64)")
    _member_id(member_id, ValueError)
    if not isinstance(holder_jwk, Mapping):
        raise ValueError("holder_jwk must be a JWK (a mapping)")
    holder = keys.PublicKey.from_jwk(holder_jwk)  # MalformedKey is a ValueError
    if type(status_index) is not int or not 0 <= status_index < 2**32:
        raise ValueError("status_index must be an integer, 0 <= i < 2**32")
    if not isinstance(status_uri, str) or not status_uri:
        raise ValueError("status_uri must be a non-empty string")
    iat_s, exp_s = _seconds(iat, "iat"), _seconds(exp, "exp")
    if exp_s <= iat_s:
        raise ValueError("exp must be later than iat")
    names = _group_names(groups)
    draw = salt or (lambda: secrets.token_bytes(SALT_SIZE))
    drawn: set[bytes] = set()

    def random_bytes() -> bytes:
        value = draw()
        if not isinstance(value, bytes) or len(value) < SALT_SIZE or value in drawn:
            raise ValueError(f"salt must return {SALT_SIZE} or more fresh random bytes")
        drawn.add(value)
        return value

    disclosures = [
        b64url_encode(canonical_bytes([b64url_encode(random_bytes()), group])) for group in names
    ]
    digests = [disclosure_digest(d) for d in disclosures]
    slots = GROUP_BLOCK * max(1, -(-len(names) // GROUP_BLOCK))
    while len(digests) < slots:  # decoys: SHA-256 of fresh random bytes, as RFC 9901 suggests
        digests.append(b64url_encode(hashlib.sha256(random_bytes()).digest()))
    claims: dict[str, Any] = {
        "iss": issuer,
        "iat": iat_s,
        "exp": exp_s,
        "vct": vct,
        "sub": member_id,
        "home_union": home_union,
        "cnf": {"jwk": holder.to_jwk()},
        "status": {"status_list": {"idx": status_index, "uri": status_uri}},
        "_sd_alg": SD_ALG,
        # Sorted, so the position of a digest says nothing about which group it hides.
        "groups": [{"...": digest} for digest in sorted(digests)],
    }
    token = _sign({"alg": "EdDSA", "kid": kid, "typ": SD_JWT_TYP}, claims, issuer_key)
    return "~".join([token, *disclosures, ""])


def key_binding_jwt(
    sd_jwt: str, holder_key: keys.PrivateKey, *, audience: str, nonce: str, now: datetime
) -> str:
    """The KB-JWT that binds the presentation ``sd_jwt`` (the issuer-signed JWT and the chosen
    disclosures, each followed by ``~``) to ``audience`` and ``nonce`` at ``now``; append it
    to ``sd_jwt`` to present. :func:`present_sd_jwt` does both.

    Raises:
        ValueError: ``sd_jwt`` does not end with ``~`` or is not ASCII, an empty or
            non-string ``audience`` or ``nonce``, a naive ``now``.
    """
    if not isinstance(sd_jwt, str) or not sd_jwt.endswith("~") or not sd_jwt.isascii():
        raise ValueError("sd_jwt must be an SD-JWT without key binding (ending with '~')")
    if not isinstance(audience, str) or not audience or not isinstance(nonce, str) or not nonce:
        raise ValueError("audience and nonce must be non-empty strings")
    claims = {
        "iat": _seconds(now, "now"),
        "aud": audience,
        "nonce": nonce,
        "sd_hash": _sha256_b64(sd_jwt),
    }
    return _sign({"alg": "EdDSA", "typ": KB_JWT_TYP}, claims, holder_key)


def present_sd_jwt(
    sd_jwt: str,
    *,
    holder_key: keys.PrivateKey,
    disclose: Iterable[str],
    audience: str,
    nonce: str,
    now: datetime,
) -> str:
    """A presentation of the issued ``sd_jwt``: only the groups in ``disclose`` are disclosed,
    and a KB-JWT signed by ``holder_key`` at ``now`` answers the verifier's ``audience`` and
    ``nonce``.

    Raises:
        TypeError: ``sd_jwt`` is not a string.
        CredentialMalformed: ``sd_jwt`` is not an SD-JWT of this profile.
        BadDisclosure: one of its disclosures is not a group disclosure of this profile.
        ValueError: ``sd_jwt`` already carries a KB-JWT, ``holder_key`` is not the key of its
            ``cnf``, ``disclose`` names a group the credential does not hold (or is a string),
            and whatever :func:`key_binding_jwt` refuses.
    """
    if not isinstance(sd_jwt, str):
        raise TypeError("an SD-JWT is a string")
    parsed = _parse(sd_jwt)
    if parsed.kb is not None:
        raise ValueError("sd_jwt is already a presentation (it ends with a KB-JWT)")
    if parsed.claims.holder_key != holder_key.public_key:
        raise ValueError("holder_key is not the holder key this credential names (cnf.jwk)")
    if isinstance(disclose, str):
        raise ValueError("disclose is a collection of group names, not one string")
    wanted = set(disclose)
    held = [(_disclosed_group(d), d) for d in parsed.disclosures]
    missing = wanted - {group for group, _ in held}
    if missing:
        raise ValueError(f"the credential holds no group {sorted(missing)}")
    chosen = [disclosure for group, disclosure in held if group in wanted]
    presented = "~".join([parsed.issuer_jwt, *chosen, ""])
    return presented + key_binding_jwt(
        presented, holder_key, audience=audience, nonce=nonce, now=now
    )


# -- parsing (steps 1 and 2) -------------------------------------------------------------------


class _Jws(NamedTuple):
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


class _Claims(NamedTuple):
    """The issuer-signed JWT's claims, type-checked (not yet verified)."""

    kid: str
    issuer: str
    issuer_union: str
    issued_at: int
    expires_at: int
    vct: str
    member_id: str
    home_union: str
    holder_key: keys.PublicKey
    status_index: int
    status_uri: str
    digests: frozenset[str]


class _KeyBinding(NamedTuple):
    jws: _Jws
    issued_at: int
    audience: str
    nonce: str
    sd_hash: str


class _Parsed(NamedTuple):
    issuer_jwt: str
    claims: _Claims
    jws: _Jws
    disclosures: list[str]
    presented: str  # everything before the KB-JWT: what sd_hash covers
    kb: _KeyBinding | None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate member")
    return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json(part: str) -> Any:
    """The JSON value in the base64url ``part``; raises ValueError or RecursionError."""
    return json.loads(
        b64url_decode(part).decode("utf-8"),
        object_pairs_hook=_no_duplicates,
        parse_constant=_refuse_constant,
    )


def _jws(token: str, what: str) -> _Jws:
    parts = token.split(".")
    if len(parts) != 3:
        raise CredentialMalformed(f"the {what} is not a compact JWS (three dot-separated parts)")
    values = []
    for part, name in ((parts[0], "header"), (parts[1], "payload")):
        try:
            value = _json(part)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError too
            raise CredentialMalformed(f"the {what} {name} is not base64url JSON") from e
        if type(value) is not dict:
            raise CredentialMalformed(f"the {what} {name} is not a JSON object")
        values.append(value)
    try:
        signature = b64url_decode(parts[2])
    except ValueError as e:
        raise CredentialMalformed(f"the {what} signature is not base64url") from e
    if len(signature) != 64:
        raise CredentialMalformed(f"the {what} signature is not an Ed25519 signature (64 bytes)")
    return _Jws(values[0], values[1], f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def _check_header(header: dict[str, Any], typ: str, members: frozenset[str], what: str) -> None:
    alg = header.get("alg")
    if alg != "EdDSA":
        # "none" among them: RFC 9901 forbids it, and this profile signs with Ed25519 only.
        raise CredentialMalformed(f"the {what} alg is {str(alg)[:16]!r}, not EdDSA")
    if header.get("typ") != typ:
        raise CredentialMalformed(f"the {what} typ is not {typ}")
    if set(header) != members:
        raise CredentialMalformed(f"the {what} header must hold exactly {sorted(members)}")


def _member_id(value: object, error: type[Exception]) -> str:
    if isinstance(value, str):
        try:
            if len(b64url_decode(value)) == MEMBER_ID_SIZE:
                return value
        except ValueError:
            pass
    raise error(f"the member id must be the base64url of {MEMBER_ID_SIZE} bytes")


def _time(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_TIME:
        raise CredentialMalformed(f"{what} is not a NumericDate (an integer in range)")
    return value


def _exactly(value: object, members: frozenset[str], what: str) -> dict[str, Any]:
    if type(value) is not dict or set(value) != members:
        raise CredentialMalformed(f"{what} must be an object of exactly {sorted(members)}")
    return value


def _holder_key(cnf: object) -> keys.PublicKey:
    jwk = _exactly(_exactly(cnf, frozenset({"jwk"}), "cnf")["jwk"], _JWK_MEMBERS, "cnf.jwk")
    try:
        return keys.PublicKey.from_jwk(jwk)
    except (keys.MalformedKey, TypeError) as e:
        raise CredentialMalformed("cnf.jwk is not an OKP/Ed25519 public key") from e


def _digests(groups: object) -> frozenset[str]:
    """The ``groups`` claim: 1 to 4 x MAX_GROUPS placeholders ``{"...": <digest>}``, each
    digest a SHA-256 one, none twice (RFC 9901: a digest MUST NOT appear more than once)."""
    if type(groups) is not list or not 0 < len(groups) <= GROUP_BLOCK * MAX_GROUPS:
        raise CredentialMalformed("groups must be a non-empty array of digests")
    digests: set[str] = set()
    for item in groups:
        digest = _exactly(item, frozenset({"..."}), "a groups element")["..."]
        try:
            ok = isinstance(digest, str) and len(b64url_decode(digest)) == 32
        except ValueError:
            ok = False
        if not ok:
            raise CredentialMalformed("a groups digest is not the base64url of a SHA-256 hash")
        if digest in digests:
            raise CredentialMalformed("a digest appears twice in the credential")
        digests.add(digest)
    return frozenset(digests)


def _claims(jws: _Jws) -> _Claims:
    """Step 2 for the issuer-signed JWT: header and claim types (CredentialMalformed only)."""
    _check_header(jws.header, SD_JWT_TYP, frozenset({"alg", "kid", "typ"}), "credential")
    kid = jws.header["kid"]
    if not isinstance(kid, str) or not _KID_RE.match(kid):
        raise CredentialMalformed("the credential kid is not an RFC 7638 SHA-256 key id")
    claims = jws.claims
    if set(claims) != CLAIMS:
        missing, extra = sorted(CLAIMS - set(claims)), sorted(set(claims) - CLAIMS)[:5]
        raise CredentialMalformed(f"credential claims missing {missing}, unexpected {extra}")
    if claims["_sd_alg"] != SD_ALG:
        raise CredentialMalformed(f"_sd_alg must be {SD_ALG}")
    iss, vct, home = claims["iss"], claims["vct"], claims["home_union"]
    union = issuer_union_of(iss) if isinstance(iss, str) else None
    if union is None:
        raise CredentialMalformed("iss names no union (a union code or an https URL ending in one)")
    if not isinstance(vct, str) or not vct:
        raise CredentialMalformed("vct must be a non-empty string")
    if not isinstance(home, str) or not _UNION_RE.match(home):
        raise CredentialMalformed("home_union is not a union code")
    iat, exp = _time(claims["iat"], "iat"), _time(claims["exp"], "exp")
    if exp <= iat:
        raise CredentialMalformed("exp is not later than iat")
    status = _exactly(claims["status"], frozenset({"status_list"}), "status")
    reference = _exactly(status["status_list"], frozenset({"idx", "uri"}), "status.status_list")
    index, uri = reference["idx"], reference["uri"]
    if type(index) is not int or not 0 <= index < 2**53 or not isinstance(uri, str) or not uri:
        raise CredentialMalformed("status_list idx must be a non-negative integer, uri a string")
    return _Claims(
        kid,
        iss,
        union,
        iat,
        exp,
        vct,
        _member_id(claims["sub"], CredentialMalformed),
        home,
        _holder_key(claims["cnf"]),
        index,
        uri,
        _digests(claims["groups"]),
    )


def _key_binding(token: str) -> _KeyBinding:
    """Step 2 for the KB-JWT: header and claim types (CredentialMalformed only)."""
    jws = _jws(token, "KB-JWT")
    _check_header(jws.header, KB_JWT_TYP, frozenset({"alg", "typ"}), "KB-JWT")
    claims = _exactly(jws.claims, KB_CLAIMS, "the KB-JWT payload")
    aud, nonce, sd_hash = claims["aud"], claims["nonce"], claims["sd_hash"]
    if not isinstance(aud, str) or not isinstance(nonce, str) or not isinstance(sd_hash, str):
        raise CredentialMalformed("KB-JWT aud, nonce and sd_hash must be strings")
    return _KeyBinding(jws, _time(claims["iat"], "KB-JWT iat"), aud, nonce, sd_hash)


def _parse(text: str) -> _Parsed:
    """Steps 1 and 2: the compact form, both JWTs' structure and the claim types."""
    if len(text) > MAX_TEXT:
        raise CredentialMalformed(f"an SD-JWT of this profile is shorter than {MAX_TEXT}")
    if not text.isascii():
        raise CredentialMalformed("an SD-JWT is ASCII (base64url parts and separators)")
    if "~" not in text:
        raise CredentialMalformed("not an SD-JWT: no '~' after the issuer-signed JWT")
    issuer_jwt, *disclosures, last = text.split("~")
    if "" in disclosures:
        raise CredentialMalformed("an empty disclosure ('~~')")
    jws = _jws(issuer_jwt, "credential")
    claims = _claims(jws)
    kb = _key_binding(last) if last else None
    presented = text[: len(text) - len(last)]
    return _Parsed(issuer_jwt, claims, jws, disclosures, presented, kb)


# -- verification ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifiedSdJwt:
    """An SD-JWT VC that passed every check. ``groups`` holds only the disclosed groups;
    ``issuer`` is the ``iss`` claim and ``issuer_union`` the union whose key signed it (the
    trusted fact); ``key_bound_at`` is the KB-JWT's time (``None`` without one);
    ``presentation_hash`` is SHA-256 of the verified text (what a redemption record carries)."""

    member_id: str
    home_union: str
    issuer: str
    issuer_union: str
    vct: str
    groups: frozenset[str]
    holder_key: keys.PublicKey
    issued_at: datetime
    expires_at: datetime
    status_index: int
    status_uri: str
    kid: str
    key_bound_at: datetime | None
    presentation_hash: bytes

    @property
    def holder_jwk(self) -> dict[str, str]:
        """The holder's public key as the JWK of ``cnf.jwk``."""
        return self.holder_key.to_jwk()


def _issuer_key(
    trust_list: keys.TrustList | keys.Keyring, claims: _Claims, now: datetime, leeway: timedelta
) -> keys.PublicKey:
    """Step 3: a trust list not expired; ``kid`` an issuer key of the union ``iss`` names,
    valid at ``iat``."""
    if isinstance(trust_list, keys.TrustList) and now >= trust_list.expires_at + leeway:
        raise UnknownIssuer(f"the trust list expired at {trust_list.expires_at}: refresh it")
    try:
        return trust_list.verification_key(
            claims.kid,
            keys.Role.ISSUER,
            datetime.fromtimestamp(claims.issued_at, UTC),
            scope=claims.issuer_union,
        )
    except keys.KeysError as e:
        raise UnknownIssuer(f"issuer key {claims.kid}: {e.code}: {e}") from e


def _check_status(
    status_lists: Mapping[str, VerifiedStatusList],
    claims: _Claims,
    now: datetime,
    leeway: timedelta,
    max_age: timedelta | None,
) -> None:
    """Step 6: the referenced list is held (by its URI or its union), its own, fresh; the
    index in range and its status 0."""
    held = status_lists.get(claims.status_uri)
    if held is None:
        held = status_lists.get(claims.issuer_union)
    if held is None:
        raise StatusListMissing(f"no status list {claims.status_uri} of {claims.issuer_union}")
    if held.issuer != claims.issuer_union or held.uri != claims.status_uri:
        raise StatusListMissing(
            f"the status list held is {held.uri} of {held.issuer}, not the credential's"
            f" {claims.status_uri} of {claims.issuer_union}"
        )
    reason = held.stale_reason(now, max_age=max_age, leeway=leeway)
    if reason is not None:
        raise StatusListStale(reason)
    if claims.status_index >= held.size:
        raise StatusIndexOutOfRange(
            f"status index {claims.status_index} beyond the list's {held.size}"
        )
    status = held.status(claims.status_index)
    if status:
        what = "suspended" if status == 2 else "revoked"
        raise CredentialRevoked(f"credential {what} (status {status}) by {claims.issuer_union}")


def _disclosed_group(disclosure: str) -> str:
    """The group of an array-element disclosure ``[salt, group]``."""
    try:
        value = _json(disclosure)
    except (ValueError, RecursionError) as e:
        raise BadDisclosure("a disclosure is not base64url JSON") from e
    if type(value) is not list or len(value) != 2:
        raise BadDisclosure("a disclosure is not an array element disclosure [salt, group]")
    salt, group = value
    if not isinstance(salt, str) or not isinstance(group, str) or not _GROUP_RE.match(group):
        raise BadDisclosure("a disclosure does not name a group")
    return group


def _disclosed_groups(digests: frozenset[str], disclosures: list[str]) -> frozenset[str]:
    """Step 10: every disclosure presented once, matching a digest of ``groups`` (RFC 9901:
    an unreferenced disclosure MUST be refused), and naming a group once."""
    seen: set[str] = set()
    groups: set[str] = set()
    for disclosure in disclosures:
        digest = disclosure_digest(disclosure)
        if digest in seen:
            raise BadDisclosure("a disclosure is presented twice")
        seen.add(digest)
        if digest not in digests:
            raise BadDisclosure("a disclosure matches no digest of the credential")
        group = _disclosed_group(disclosure)
        if group in groups:
            raise BadDisclosure(f"group {group} is disclosed twice")
        groups.add(group)
    return frozenset(groups)


def _check_key_binding(
    parsed: _Parsed,
    kb: _KeyBinding,
    window: tuple[int, int],
    audience: str | None,
    nonce: str | None,
) -> None:
    """Steps 7 to 9: the KB-JWT is the holder's, over exactly what is presented, made within
    ``window`` (NumericDate seconds, both ends included) for this audience and nonce."""
    try:  # step 7
        parsed.claims.holder_key.verify(kb.jws.signature, kb.jws.signing_input)
    except keys.InvalidSignature as e:
        raise HolderProofInvalid("the KB-JWT is not signed by the holder key (cnf.jwk)") from e
    if kb.sd_hash != _sha256_b64(parsed.presented):
        raise HolderProofInvalid(
            "the KB-JWT's sd_hash is not over these disclosures (added, removed or altered)"
        )
    if not window[0] <= kb.issued_at <= window[1]:  # step 8
        raise HolderProofStale(
            f"KB-JWT made at {_iso(kb.issued_at)}, outside the accepted window"
            f" {_iso(window[0])}..{_iso(window[1])}"
        )
    if (audience is not None and kb.audience != audience) or (  # step 9
        nonce is not None and kb.nonce != nonce
    ):
        raise ChallengeMismatch("the KB-JWT's aud or nonce is not this verifier's")


def verify_sd_jwt(
    text: str,
    *,
    trust_list: keys.TrustList | keys.Keyring,
    now: datetime,
    status_lists: Mapping[str, VerifiedStatusList] | None,
    leeway: timedelta = DEFAULT_LEEWAY,
    expected_audience: str | None = None,
    expected_nonce: str | None = None,
    require_key_binding: bool = True,
    max_proof_age: timedelta = DEFAULT_MAX_PROOF_AGE,
    status_max_age: timedelta | None = None,
) -> VerifiedSdJwt:
    """Verify an SD-JWT VC presentation (or, with ``require_key_binding=False``, an issued
    credential, as a wallet does on receipt) at ``now``. Pure: trust material is an input.

    ``trust_list`` is a verified trust list (a station, a wallet, a third party) or the issuing
    server's own keyring. ``status_lists`` holds verified Token Status Lists by URI or by union
    code; ``None`` skips the status check (only for a caller that checks status itself, such as
    the issuing server). A KB-JWT, when present, is always verified; ``expected_audience`` and
    ``expected_nonce`` are required with ``require_key_binding``.

    The checks, in this order (the station's numbering, docs/sd-jwt.md):

    1. the compact form: ASCII, ``~``-separated, no empty disclosure   -- CredentialMalformed
    2. both JWTs: base64url JSON, ``typ`` ``dc+sd-jwt`` / ``kb+jwt``, ``alg`` EdDSA, exactly
       the profile's claims and types, ``_sd_alg`` sha-256, no digest twice
                                                                      -- CredentialMalformed
    3. the issuer key: trust list not expired; ``kid`` an issuer key of the union ``iss``
       names, valid at ``iat``                                        -- UnknownIssuer
    4. the issuer's signature                                 -- CredentialSignatureInvalid
    5. ``now < exp + leeway`` and ``iat <= now + leeway``
                                                  -- CredentialExpired, CredentialNotYetValid
    6. the status list: held, the issuer's, fresh, index in range, status 0
            -- StatusListMissing, StatusListStale, StatusIndexOutOfRange, CredentialRevoked
    7. the KB-JWT: present when required, signed by ``cnf.jwk``, ``sd_hash`` over exactly the
       presented issuer JWT and disclosures                         -- HolderProofInvalid
    8. the KB-JWT's ``iat`` within ``max_proof_age`` (+ ``leeway``) before ``now``, not
       after ``now + leeway``                                        -- HolderProofStale
    9. ``aud`` and ``nonce`` equal the expected ones                 -- ChallengeMismatch
    10. each disclosure once, referenced by a digest, naming a group -- BadDisclosure

    Raises:
        CredentialError: one of the subclasses above, and nothing else for any ``text``.
        TypeError: ``text`` is not a string. ValueError: ``now`` is naive, or key binding is
            required without an expected audience and nonce.
    """
    if not isinstance(text, str):
        raise TypeError("an SD-JWT presentation is a string")
    now_s = _seconds(now, "now")
    if require_key_binding and (expected_audience is None or expected_nonce is None):
        raise ValueError("key binding needs an expected audience and nonce")
    leeway_s = int(leeway.total_seconds())
    parsed = _parse(text)  # steps 1, 2
    claims = parsed.claims
    issuer_key = _issuer_key(trust_list, claims, now, leeway)  # step 3
    try:  # step 4
        issuer_key.verify(parsed.jws.signature, parsed.jws.signing_input)
    except keys.InvalidSignature as e:
        raise CredentialSignatureInvalid("the issuer's signature does not verify") from e
    if now_s >= claims.expires_at + leeway_s:  # step 5
        raise CredentialExpired(f"credential expired at {_iso(claims.expires_at)}")
    if claims.issued_at > now_s + leeway_s:
        raise CredentialNotYetValid(f"credential is issued at {_iso(claims.issued_at)}")
    if status_lists is not None:  # step 6
        _check_status(status_lists, claims, now, leeway, status_max_age)
    kb = parsed.kb
    if kb is not None:  # steps 7, 8 and 9
        earliest = now_s - int(max_proof_age.total_seconds()) - leeway_s
        window = (max(0, earliest), min(MAX_TIME, now_s + leeway_s))
        _check_key_binding(parsed, kb, window, expected_audience, expected_nonce)
    elif require_key_binding:  # step 7
        raise HolderProofInvalid("key binding is required and there is no KB-JWT")
    groups = _disclosed_groups(claims.digests, parsed.disclosures)  # step 10
    return VerifiedSdJwt(
        member_id=claims.member_id,
        home_union=claims.home_union,
        issuer=claims.issuer,
        issuer_union=claims.issuer_union,
        vct=claims.vct,
        groups=groups,
        holder_key=claims.holder_key,
        issued_at=datetime.fromtimestamp(claims.issued_at, UTC),
        expires_at=datetime.fromtimestamp(claims.expires_at, UTC),
        status_index=claims.status_index,
        status_uri=claims.status_uri,
        kid=claims.kid,
        key_bound_at=None if kb is None else datetime.fromtimestamp(kb.issued_at, UTC),
        presentation_hash=hashlib.sha256(text.encode("ascii")).digest(),
    )


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
