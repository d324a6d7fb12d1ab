"""verifier: the pure formats and checks that a server, a station and an auditor all need.

What it is: canonical bytes, Merkle proofs, checkpoints, credentials and QR presentations with
cached trust and status lists, the station's offline queue and sync client, and the auditor's
tools (the chain audit, and the statistics recomputed from the chain alone: ``stats.py``). It
runs on a station device or an auditor's laptop.

What it may import: the standard library, ``keys`` and pure-Python format libraries. Never
``ledger`` or ``api``, a database driver or a web framework (keys <- verifier <- ledger <- api).
The one exception is the standard library's ``sqlite3``, for the station's own offline queue
only (``station_queue.py``: a station device must keep its records durably, with nothing more
installed than Python).
"""
