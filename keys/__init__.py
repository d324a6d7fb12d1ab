"""keys: Ed25519 key material for UnionLedger.

What it is: generating, loading, signing and verifying with Ed25519 keys; RFC 7638 key ids;
keyrings of keys per role with validity windows, rotation and revocation; private keys
encrypted at rest; and the root-signed trust list that stations and auditors pin.

What it may import: the standard library, pynacl, cryptography and pyjwt. Nothing of ours:
``keys`` is the bottom of the dependency graph (keys <- verifier <- ledger <- api).

Public API (import from here, not from the modules):
    PrivateKey, PublicKey, KeyId, jwk_thumbprint        -- ed25519.py, jwk.py
    Role, KeyRecord, Keyring                            -- keyring.py
    KeyStore, KdfParams                                 -- store.py
    TrustList, sign_trust_list, verify_trust_list      -- trustlist.py
    KeysError and its subclasses                        -- errors.py
"""

from keys.ed25519 import KeyId, PrivateKey, PublicKey
from keys.errors import (
    CorruptKeyFile,
    InvalidSignature,
    KeyExpired,
    KeyNotYetValid,
    KeyRevoked,
    KeyringExists,
    KeyringMissing,
    KeyRoleMismatch,
    KeyScopeMismatch,
    KeysError,
    MalformedKey,
    NoCurrentKey,
    TrustListError,
    TrustListExpired,
    TrustListSignatureInvalid,
    UnknownKeyId,
    WrongPassphrase,
)
from keys.jwk import b64url_decode, b64url_encode, jwk_thumbprint
from keys.keyring import DEFAULT_LEAD_TIMES, KeyRecord, Keyring, Role
from keys.store import KdfParams, KeyStore
from keys.timefmt import format_rfc3339, parse_rfc3339, utc_now
from keys.trustlist import TRUST_LIST_TYP, TrustList, sign_trust_list, verify_trust_list

__all__ = [
    "DEFAULT_LEAD_TIMES",
    "TRUST_LIST_TYP",
    "CorruptKeyFile",
    "InvalidSignature",
    "KdfParams",
    "KeyExpired",
    "KeyId",
    "KeyNotYetValid",
    "KeyRecord",
    "KeyRevoked",
    "KeyRoleMismatch",
    "KeyScopeMismatch",
    "KeyStore",
    "Keyring",
    "KeyringExists",
    "KeyringMissing",
    "KeysError",
    "MalformedKey",
    "NoCurrentKey",
    "PrivateKey",
    "PublicKey",
    "Role",
    "TrustList",
    "TrustListError",
    "TrustListExpired",
    "TrustListSignatureInvalid",
    "UnknownKeyId",
    "WrongPassphrase",
    "b64url_decode",
    "b64url_encode",
    "format_rfc3339",
    "jwk_thumbprint",
    "parse_rfc3339",
    "sign_trust_list",
    "utc_now",
    "verify_trust_list",
]
