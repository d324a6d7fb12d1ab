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
