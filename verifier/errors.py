"""The exception tree of ``verifier``: one root, one class per way a check fails.

Every error has a stable ``code`` (the API maps it to a problem+json ``type``, the CLI to a
message) and a message that names what failed and where, never personal data.
"""

from __future__ import annotations


class VerifierError(Exception):
    """Root of every error raised by ``verifier``."""

    code = "verification-failed"

    def diagnostics(self) -> str:
        return f"{self.code}: {self}"


class CanonicalError(VerifierError, ValueError):
    """A value cannot be encoded as canonical JSON, or bytes are not in canonical form."""

    code = "not-canonical"


class ProofError(VerifierError):
    """A Merkle inclusion or consistency proof does not verify or is malformed."""

    code = "invalid-proof"


class InclusionProofError(ProofError):
    code = "invalid-inclusion-proof"


class ConsistencyProofError(ProofError):
    code = "invalid-consistency-proof"


class NoteError(VerifierError):
    """A signed note or checkpoint is malformed or not signed by a trusted key."""

    code = "invalid-signed-note"


class CheckpointError(NoteError):
    code = "invalid-checkpoint"


class EntryError(VerifierError):
    """A ledger entry is malformed (fields, types, canonical form)."""

    code = "invalid-entry"


class ChainError(VerifierError):
    """The hash chain is broken: a gap, a wrong previous hash, a wrong index."""

    code = "broken-chain"


class ReceiptError(VerifierError):
    """A proof bundle (receipt) is malformed or does not verify."""

    code = "invalid-receipt"


# -- Station credentials and status lists (credential.py, statuslist.py) ------------------------


class StatusListError(VerifierError):
    """A Token Status List (or its signed token) is malformed or cannot be trusted."""

    code = "invalid-status-list"


class StatusListSignatureInvalid(StatusListError):
    """The status list token is not signed by an issuer key of the trust list."""

    code = "status-list-bad-signature"


class StatusListExpired(StatusListError):
    """The status list token is past its ``exp`` (or issued in the future)."""

    code = "status-list-expired"


class StatusIndexError(StatusListError, IndexError):
    """An index beyond the end of a status list."""

    code = "status-list-index-out-of-range"


class CredentialError(VerifierError):
    """A station QR presentation is refused. ``step`` is the number of the failed check
    (``verifier.credential.verify_presentation``, docs/credentials.md)."""

    code = "invalid-credential"
    step = 0


class CredentialMalformed(CredentialError):
    """Not a presentation: wrong prefix or version, bad base45, CBOR or structure (steps 1-2),
    or a home claim that repeats the issuer union (found at step 3, once the key is known)."""

    code = "credential-malformed"
    step = 2


class UnknownIssuer(CredentialError):
    """The credential's short kid names no issuer key of the trust list, or several; or the key
    could not sign at issuance (not yet valid, expired, revoked); or the trust list expired."""

    code = "credential-unknown-issuer"
    step = 3


class CredentialSignatureInvalid(CredentialError):
    """The issuer's signature on the credential does not verify."""

    code = "credential-bad-signature"
    step = 4


class CredentialExpired(CredentialError):
    """The credential is past its ``exp`` (beyond the clock leeway)."""

    code = "credential-expired"
    step = 5


class CredentialNotYetValid(CredentialError):
    """The credential's ``iat`` lies in the future (beyond the clock leeway)."""

    code = "credential-not-yet-valid"
    step = 5


class CredentialRevoked(CredentialError):
    """The issuer's status list marks the credential revoked (or suspended)."""

    code = "credential-revoked"
    step = 6


class StatusListStale(CredentialError):
    """The issuer's status list is older than its ``ttl`` or the station's maximum age."""

    code = "status-list-stale"
    step = 6


class StatusListMissing(StatusListStale):
    """The station holds no status list for the credential's issuer."""

    code = "status-list-missing"


class StatusIndexOutOfRange(CredentialError):
    """The credential's status index lies beyond the end of its issuer's status list."""

    code = "status-index-out-of-range"
    step = 6


class HolderProofInvalid(CredentialError):
    """The holder proof is not signed by the credential's holder key (another phone, a copy,
    or an altered QR)."""

    code = "holder-proof-invalid"
    step = 7


class HolderProofStale(CredentialError):
    """The holder proof's time is outside the accepted window (an old screenshot)."""

    code = "holder-proof-stale"
    step = 8


class ChallengeMismatch(CredentialError):
    """The holder proof does not answer this station's challenge."""

    code = "challenge-mismatch"
    step = 9


class BadDisclosure(CredentialError):
    """A disclosed group does not match a digest of the credential."""

    code = "bad-disclosure"
    step = 10


# -- The station's offline records, cache and queue (station.py, station_queue.py) -------------


class StationRecordError(VerifierError):
    """An offline redemption record (or a batch of them) is refused (docs/station.md)."""

    code = "invalid-station-record"


class RecordMalformed(StationRecordError):
    """Not a record of this format: the compact JWS, the canonical JSON, a member's type."""

    code = "record-malformed"


class RecordSignatureInvalid(StationRecordError):
    """The device key's signature does not verify: the record was altered after signing."""

    code = "record-bad-signature"


class RecordUnknownKey(StationRecordError):
    """The record's kid names no station key of the expected station."""

    code = "record-unknown-key"


class RecordKeyRevoked(StationRecordError):
    """The device key could not sign at the record's time (revoked, not yet valid, expired)."""

    code = "record-key-revoked"


class RecordWrongStation(StationRecordError):
    """The record names another station than the one syncing it."""

    code = "record-wrong-station"


class RecordClockSkew(StationRecordError):
    """The record's time lies in the future, or before its predecessor's, beyond the leeway."""

    code = "record-clock-skew"


class RecordChainBroken(StationRecordError):
    """``prev`` is not the hash of the device's previous record, or another device's chain."""

    code = "record-chain-broken"


class RecordGap(RecordChainBroken):
    """A sequence number is missing."""

    code = "record-gap"


class RecordDuplicate(RecordChainBroken):
    """A sequence number already seen (a resend, or a forked chain)."""

    code = "record-duplicate"


class RecordReordered(RecordChainBroken):
    """The records are out of sequence order (the missing one comes later in the batch)."""

    code = "record-reordered"


class RecordReplayed(StationRecordError):
    """A second record for a presentation already redeemed."""

    code = "record-presentation-replayed"


class StationCacheError(VerifierError):
    """A provisioned item (program rules, a list) is malformed or does not fit the station."""

    code = "station-cache-invalid"


class StationQueueError(VerifierError):
    """The local queue is another device's, damaged, or asked for an impossible change."""

    code = "station-queue-error"
