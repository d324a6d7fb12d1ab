"""The exception tree of ``keys``: one root, one class per way things go wrong.

Every error carries a stable ``code`` (a slug the API turns into a problem+json ``type`` and the
CLI into an exit status) and a message that is safe to show: no key material and no passphrase
ever appears in one.
"""

from __future__ import annotations


class KeysError(Exception):
    """Root of every error raised by ``keys``."""

    code = "keys-error"

    def diagnostics(self) -> str:
        """A one-line, user-facing description (no secrets)."""
        return f"{self.code}: {self}"


class InvalidSignature(KeysError):
    """A signature does not verify (wrong key, altered message or altered signature)."""

    code = "invalid-signature"


class MalformedKey(KeysError, ValueError):
    """Key bytes or a JWK are not a well-formed Ed25519 key."""

    code = "malformed-key"


class UnknownKeyId(KeysError):
    """No key with this id is known. A key id is a hint, never a reason to trust."""

    code = "unknown-key-id"


class KeyRoleMismatch(KeysError):
    """The key exists but is not a key of the role the caller needs."""

    code = "key-role-mismatch"


class KeyScopeMismatch(KeysError):
    """The key belongs to another union or station than the one the signature claims."""

    code = "key-scope-mismatch"


class KeyNotYetValid(KeysError):
    """The key's validity window starts after the signing time."""

    code = "key-not-yet-valid"


class KeyExpired(KeysError):
    """The key's validity window ended before the signing time."""

    code = "key-expired"


class KeyRevoked(KeysError):
    """The key was revoked at or before the signing time."""

    code = "key-revoked"


class NoCurrentKey(KeysError):
    """No key of the role (and scope) may sign at the requested time."""

    code = "no-current-key"


class WrongPassphrase(KeysError):
    """The passphrase does not open this keyring."""

    code = "wrong-passphrase"


class CorruptKeyFile(KeysError):
    """A key file is truncated, altered or not a keyring file at all."""

    code = "corrupt-key-file"


class KeyringMissing(KeysError):
    """There is no keyring in this data directory yet (run ``unionledger keys init``)."""

    code = "keyring-missing"


class KeyringExists(KeysError):
    """``init`` would overwrite an existing keyring."""

    code = "keyring-exists"


class TrustListError(KeysError):
    """A trust list is malformed or cannot be trusted."""

    code = "trust-list-invalid"


class TrustListSignatureInvalid(TrustListError):
    """The trust list is not signed by the pinned root key."""

    code = "trust-list-signature-invalid"


class TrustListExpired(TrustListError):
    """The trust list is past its ``exp`` (or issued in the future)."""

    code = "trust-list-expired"
