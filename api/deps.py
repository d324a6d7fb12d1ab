"""What routes depend on: the services built by the app factory, as FastAPI dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

import keys
from api.settings import Settings
from ledger.credentials import Credentials
from ledger.log import LogReader
from ledger.members import Members
from ledger.redemptions import Redemptions
from ledger.sequencer import Sequencer
from verifier.note import NoteSigner, NoteVerifier

if TYPE_CHECKING:  # api.auth imports this module
    from api.auth import AuthService
    from api.keywatch import KeyringWatcher


@dataclass
class Services:
    """Built once per app from the settings."""

    settings: Settings
    engine: Engine
    keyring: keys.Keyring
    reader: LogReader
    sequencer: Sequencer
    members: Members
    credentials: Credentials
    redemptions: Redemptions
    auth: AuthService | None = None  # logins and tokens (api/auth.py); None: every login is 503
    watcher: KeyringWatcher | None = None  # reloads the keyring file when it changes

    def use_keyring(self, keyring: keys.Keyring) -> None:
        """Sign and verify with ``keyring`` from now on (api/keywatch.py): access tokens, station
        logins, credentials, the trust and status lists, checkpoints."""
        self.keyring = keyring
        self.credentials.use_keyring(keyring)
        if self.auth is not None:
            self.auth.use_keyring(keyring)

    def log_verifier(self) -> NoteVerifier:
        return log_signer(self.settings, self.keyring).verifier()


def log_signer(settings: Settings, keyring: keys.Keyring) -> NoteSigner:
    """The checkpoint signer now: the current log key, named by the log's origin.

    Raises:
        keys.NoCurrentKey: no log key may sign now.
    """
    return NoteSigner(settings.log_origin, keyring.signer(keys.Role.LOG, keys.utc_now()))


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a hop that costs more
    # than this whole function; the dependencies that do no blocking I/O are all ``async``.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
