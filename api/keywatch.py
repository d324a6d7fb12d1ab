"""A running server follows its keyring file (docs/keys.md section 3.6).

``unionledger keys rotate|revoke|register`` change the keyring file while a server runs. The
server loaded the file once, at start; without this, it kept signing access tokens, credentials
and checkpoints with a key the file had revoked, and kept accepting what that key signed, until
a restart. :class:`KeyringWatcher` looks at the file's identity (inode, size, modification
time) every ``interval`` seconds and, when it changed, loads it again (the file is replaced
atomically, ``keys.store.atomic_write``; the load takes the keyring's lock) and hands the new
keyring to ``apply`` (which records it on the chain, ``ledger.keyevents``). A file that cannot
be loaded any more, or that contradicts the chain, is logged and the keys in use are kept: a
server never runs without keys because of a bad edit.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

import keys
from ledger.domain import DomainError
from ledger.errors import LedgerError

log = logging.getLogger("unionledger.keys")

Stamp = tuple[int, int, int]


class KeyringWatcher:
    """Reload the keyring of ``store`` when its file changes; :meth:`check` does it once,
    :meth:`start` every ``interval`` seconds in a daemon thread."""

    def __init__(
        self,
        store: keys.KeyStore,
        passphrase: str,
        apply: Callable[[keys.Keyring], None],
        *,
        interval: float = 1.0,
    ) -> None:
        self._store = store
        self._passphrase = passphrase
        self._apply = apply
        self._interval = interval
        self._stamp = self._read_stamp()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _read_stamp(self) -> Stamp | None:
        try:
            st = os.stat(self._store.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def check(self) -> bool:
        """Load the keyring again if its file changed since the last look; whether it did."""
        with self._lock:
            stamp = self._read_stamp()
            if stamp is None or stamp == self._stamp:
                return False
            try:
                with self._store.locked():
                    stamp = self._read_stamp()  # the file as loaded, under the writers' lock
                    ring = self._store.load(self._passphrase)
            except (keys.KeysError, OSError) as e:
                self._stamp = stamp  # not again until the file changes again
                log.error("the keyring file changed but cannot be loaded (keys kept): %s", e)
                return False
            try:
                self._apply(ring)
            except (keys.KeysError, DomainError) as e:  # e.g. it contradicts the chain
                self._stamp = stamp
                log.error("the keyring file changed but is refused (keys kept): %s", e)
                return False
            except (SQLAlchemyError, LedgerError, TimeoutError) as e:  # not on the chain: retry
                log.error("the keyring file changed but the ledger is unavailable: %s", e)
                return False
            self._stamp = stamp
            log.info("the keyring file changed: reloaded (%d keys)", len(list(ring)))
            return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="keyring-watcher", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception:  # a watcher that dies silently would be worse than a log line
                log.exception("keyring watcher")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
