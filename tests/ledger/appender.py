"""A separate process that appends to a ledger: used by the fork and crash tests.

    python -m tests.ledger.appender URL SEED_HEX COUNT [BATCH]

Appends COUNT events (COUNT 0: until killed) through its own sequencer, from a few threads at
once so that batches form, and prints each acknowledged entry's index on its own line.
"""

from __future__ import annotations

import sys
import threading

from keys import PrivateKey
from ledger.db import make_engine
from ledger.projections import default_projections
from ledger.schema import init_schema
from ledger.sequencer import Event, Sequencer
from verifier.note import NoteSigner

ORIGIN = "test.unionledger.localhost/ledger"


def main() -> None:
    url, seed_hex, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    engine = make_engine(url, writer=True)
    init_schema(engine)
    signer = NoteSigner(ORIGIN, PrivateKey.from_seed(bytes.fromhex(seed_hex)))
    out_lock = threading.Lock()
    with Sequencer(
        engine,
        origin=ORIGIN,
        signer=lambda: signer,
        projections=default_projections(),
        checkpoint_interval=0.05,
    ) as sequencer:

        def worker(n: int) -> None:
            i = 0
            while count == 0 or i < count // threads:
                (entry,) = sequencer.append([Event("TestAppended", "test", {"w": n, "i": i})])
                with out_lock:
                    sys.stdout.write(f"{entry.index}\n")
                    sys.stdout.flush()
                i += 1

        workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    engine.dispose()


if __name__ == "__main__":
    main()
