"""The exception tree of ``ledger``."""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error raised by ``ledger``."""

    code = "ledger-error"

    def diagnostics(self) -> str:
        return f"{self.code}: {self}"


class OutOfRange(LedgerError):
    """An index or tree size beyond the log (or otherwise impossible)."""

    code = "out-of-range"


class NotCheckpointed(LedgerError):
    """No signed checkpoint covers this entry yet (one follows within a second)."""

    code = "not-checkpointed"


class LedgerClosed(LedgerError):
    """The sequencer is stopped: nothing more can be appended through it."""

    code = "ledger-closed"


class CommandFailed(LedgerError):
    """A command failed after it had appended events; its batch was retried without it."""

    code = "command-failed"
