"""Fixtures for ledger tests: a sequencer with a log key on each database backend."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine

from keys import PrivateKey
from ledger.db import make_engine
from ledger.log import LogReader
from ledger.projections import default_projections
from ledger.schema import init_schema
from ledger.sequencer import Event, Sequencer
from tests.ledger.appender import ORIGIN
from verifier.note import NoteSigner, NoteVerifier


@dataclass
class Ledger:
    url: str
    engine: Engine
    writer: Engine
    sequencer: Sequencer
    reader: LogReader
    key: PrivateKey

    @property
    def signer(self) -> NoteSigner:
        return NoteSigner(ORIGIN, self.key)

    @property
    def verifier(self) -> NoteVerifier:
        return self.signer.verifier()

    def append(self, n: int, type_: str = "TestAppended") -> None:
        for start in range(0, n, 500):
            self.sequencer.append(
                [Event(type_, "test", {"i": i}) for i in range(start, min(n, start + 500))]
            )


def open_ledger(url: str, key: PrivateKey, **options: object) -> Ledger:
    engine = make_engine(url)
    writer = make_engine(url, writer=True)
    init_schema(engine)
    signer = NoteSigner(ORIGIN, key)
    sequencer = Sequencer(
        writer,
        origin=ORIGIN,
        signer=lambda: signer,
        projections=default_projections(),
        **options,  # type: ignore[arg-type]
    )
    return Ledger(url, engine, writer, sequencer, LogReader(engine), key)


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    opened = open_ledger(database_url, PrivateKey.generate(), checkpoint_interval=0.0)
    try:
        yield opened
    finally:
        opened.sequencer.close()
        opened.writer.dispose()
        opened.engine.dispose()
